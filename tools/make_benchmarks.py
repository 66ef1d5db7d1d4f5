"""Regenerate docs/benchmarks.md (and docs/benchmarks.json) from one run on this machine.

    python tools/make_benchmarks.py                       # small model, PyTorch FP32 and ONNX Runtime FP32
    python tools/make_benchmarks.py --artifact q.onnx     # add rows (an INT8 ONNX, another engine …)
    python tools/make_benchmarks.py --gpu-json gpu.json   # add the GPU section written by tools/gpu_bench.py

The ONNX FP32 row uses a file exported here from the same weights as the PyTorch row (the package's
``u2deploy.export.onnx`` stage when it can run, else a plain ``torch.onnx.export``). Besides the table the
run cross-checks ``u2bench latency`` against an independent plain ``timeit`` loop on the same artifact in
the same session, and puts the paper's claims next to the counted cost and this machine's ceilings.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from u2deploy.bench import claims
from u2deploy.bench.latency import LatencyOptions, default_threads, parse_batches, run_latency
from u2deploy.bench.report import label, markdown_table
from u2deploy.bench.stats import format_ms
from u2deploy.files import write_json
from u2deploy.hardware import one_line
from u2deploy.model.registry import default_weights

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("make_benchmarks")


def export_small_onnx(folder: Path, size: tuple[int, int]) -> Path:
    """FP32 ONNX of the small model, dynamic batch, fixed size, with the same weights as ``torch:small``."""
    out = folder / f"u2netp_{size[0]}x{size[1]}_fp32.onnx"
    if default_weights("small") is not None:
        try:
            from u2deploy.export.onnx import export_onnx

            export_onnx("small", None, out, size=size, dynamic_batch=True, n_verify=2)
            return out
        except Exception as exc:  # the export stage is optional here: any failure falls back to torch.onnx
            log.info("u2deploy.export.onnx unavailable (%s); exporting with torch.onnx directly", exc)
    from u2deploy.engines.torch import TorchRunner

    runner = TorchRunner.open("torch:small", random_if_no_weights=True)
    torch.onnx.export(runner.model, torch.zeros(1, 3, *size), str(out), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["saliency"],
                      dynamic_axes={"input": {0: "batch"}, "saliency": {0: "batch"}})
    return out


def plain_timeit(artifact: str, size: tuple[int, int], threads: int, repeat: int
                 ) -> tuple[list[float], list[float]]:
    """Wall and process-CPU milliseconds per call of the bare model, timed by ``timeit`` alone."""
    x = np.random.default_rng(1).standard_normal((1, 3, *size), dtype=np.float32)
    call: Callable[[], object]
    if artifact.startswith("torch:"):
        from u2deploy.engines.torch import TorchRunner

        runner = TorchRunner.open(artifact, random_if_no_weights=True)
        model, xt = runner.model, torch.from_numpy(x)
        torch.set_num_threads(threads)

        def call() -> object:
            with torch.inference_mode():
                return model(xt)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def call() -> object:
            return session.run(None, {name: x})
    call()
    call()
    wall = timeit.repeat(call, number=1, repeat=repeat)
    cpu = timeit.repeat(call, number=1, repeat=repeat, timer=time.process_time)
    return [t * 1e3 for t in wall], [t * 1e3 for t in cpu]


def crosscheck(artifacts: list[str], opts: LatencyOptions, rounds: int = 10, calls: int = 5
               ) -> list[dict[str, Any]]:
    """u2bench p50 against a plain timeit median, in short alternating rounds, in wall and CPU time.

    The machine's load drifts by more than 15 % within minutes, so one long run of each would compare
    the load, not the methods. Each round runs both back to back (the order alternates) with the same
    number of calls; the verdict is the median over rounds of the paired ratio. Process CPU time, which
    does not grow while the process waits for a core, is compared the same way.
    """
    rows = []
    short = replace(opts, batches=(1,), warmup_s=0.0, min_time_s=0.0, min_iters=calls)
    threads = short.threads or default_threads()
    size = opts.size or (320, 320)
    for artifact in artifacts:
        ours: dict[str, list[float]] = {"wall": [], "cpu": []}
        theirs: dict[str, list[float]] = {"wall": [], "cpu": []}
        for i in range(rounds):
            for method in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
                if method == "ours":
                    (result,) = run_latency([artifact], short)
                    ours["wall"].append(result["latency_ms"]["p50"])
                    ours["cpu"].append(result["cpu_time_ms"]["p50"])
                else:
                    wall, cpu = plain_timeit(artifact, size, threads, calls)
                    theirs["wall"].append(statistics.median(wall))
                    theirs["cpu"].append(statistics.median(cpu))
        row: dict[str, Any] = {"model": artifact, "size": list(size), "threads": threads, "rounds": rounds,
                               "calls_per_round": calls}
        for clock in ("wall", "cpu"):
            ratios = [a / b for a, b in zip(ours[clock], theirs[clock], strict=True)]
            row[clock] = {"u2bench_p50_ms": statistics.median(ours[clock]),
                          "timeit_median_ms": statistics.median(theirs[clock]),
                          "ratio": statistics.median(ratios), "ratios": ratios,
                          "u2bench_rounds_ms": ours[clock], "timeit_rounds_ms": theirs[clock]}
        rows.append(row)
        log.info("crosscheck %s: paired ratio u2bench/timeit wall %.3f (rounds %s), CPU time %.3f", artifact,
                 row["wall"]["ratio"], ", ".join(f"{r:.2f}" for r in row["wall"]["ratios"]),
                 row["cpu"]["ratio"])
    return rows


def _table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    return [[label(r), str(r["batch"]), "x".join(map(str, r["size"])), str(r["latency_ms"]["n"]),
             format_ms(r["latency_ms"]["p50"], 50), format_ms(r["latency_ms"]["p90"], 90),
             f"{r['fps']:.2f}", f"{r['throughput_ips']:.2f}", format_ms(r["cpu_time_ms"]["p50"]),
             f"{r['memory']['host_peak_rss_mib']:.0f}", _load(r)] for r in results]


def _load(result: dict[str, Any]) -> str:
    load = result["hardware"].get("load_average")
    return f"{load[0]:.1f}" if load else "?"


HEADER = ("artifact", "batch", "size", "runs", "p50 ms", "p90 ms", "FPS (batches/s)", "images/s",
          "CPU-time p50 ms", "peak RSS MiB", "load")


def gpu_section(gpu_json: Path | None) -> str:
    if gpu_json is None or not gpu_json.is_file():
        return ("Not measured: the session that generated this page had no GPU. On a CUDA machine run "
                "`python tools/gpu_bench.py --out gpu.json` (PyTorch CUDA, both variants, FP32 and FP16, "
                "eager and CUDA graphs; under 5 minutes), then `python tools/make_benchmarks.py "
                "--gpu-json gpu.json`.")
    data = json.loads(gpu_json.read_text())
    results = data["results"]
    rows = [[label(r), str(r["batch"]), "x".join(map(str, r["size"])), format_ms(r["latency_ms"]["p50"], 50),
             format_ms(r["device_ms"]["p50"], 50) if r.get("device_ms") else "", f"{r['fps']:.1f}",
             f"{r['throughput_ips']:.1f}", str(r["memory"].get("device_peak_mib", ""))] for r in results]
    parts = [f"Measured on {one_line(results[0]['hardware'])}.", "",
             markdown_table(("artifact", "batch", "size", "host p50 ms", "device p50 ms", "FPS", "images/s",
                             "device MiB"), rows)]
    if data.get("claims"):
        parts += ["", "```", claims.render(data["claims"]), "```"]
    return "\n".join(parts)


def render(results: list[dict[str, Any]], checks: list[dict[str, Any]], claims_text: str | None,
           gpu: str, command: str) -> str:
    first = results[0]
    hw = first["hardware"]
    check_rows = [[c["model"], "x".join(map(str, c["size"])), clock, f"{c[clock]['u2bench_p50_ms']:.1f}",
                   f"{c[clock]['timeit_median_ms']:.1f}", f"{100 * (c[clock]['ratio'] - 1):+.1f} %",
                   "yes" if abs(c[clock]["ratio"] - 1) <= 0.15 else "NO",
                   " ".join(f"{r:.2f}" for r in c[clock]["ratios"])]
                  for c in checks for clock in ("wall", "cpu")]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}`; raw results with full hardware and software records in "
        "`docs/benchmarks.json`. Regenerate with the same command; add artifacts (e.g. an INT8 ONNX) with "
        "`--artifact PATH`.",
        "",
        "## CPU",
        "",
        f"On {one_line(hw)}. These figures are this CPU's: INT8 gains depend on its int8 dot product "
        "(without VNNI, on AVX2-only x86, far less; see `docs/int8_speed.md` and `u2bench int8-ceiling`), and a "
        "`--vnni-only` artifact is exact only where it has one.",
        "",
        markdown_table(HEADER, _table_rows(results)),
        "",
        f"Timed: model inference only ({first['timed']} for PyTorch; `session.run` on a host array "
        "for ONNX Runtime), warm-up excluded, each call synchronised; percentiles are nearest-rank and "
        "shown only with enough runs (p90 ≥ 10, p99 ≥ 100). FPS = 1000 / mean latency of one batch; "
        "images/s = batch × FPS. `load`: the 1-minute load average when the row finished (2 cores: above "
        "2 the run shared its cores). "
        f"Peak RSS: {first['memory']['host_method']}. Weights: {first.get('weights')}.",
        "",
        "**Conditions.** This is a shared 2-core VM on which other jobs were running (the load average at "
        "the start of the run is in the caption above). Absolute times are therefore pessimistic and vary "
        "between runs; ratios taken within one run (ONNX Runtime against PyTorch, batch 4 against 1) are the "
        "useful figures. The CPU-time column (process CPU time per call, all threads) counts only time on "
        "a core, so waiting in the run queue does not inflate it (worker threads spinning at a barrier "
        "while a peer is descheduled still do).",
        "",
        "### Cross-check against a plain `timeit` loop",
        "",
        "Same artifact, same session, batch 1: `u2bench latency` p50 against the median of a bare `timeit` "
        "loop (the model called directly, no u2deploy timing code). Both run in short rounds, back to back, "
        "in alternating order, so that the drifting background load hits both alike; the difference is the "
        "median over rounds of the paired ratio (medians over rounds in the time columns). `cpu` compares "
        "process CPU time per call (u2bench's `cpu_time_ms` against `timeit` with "
        "`timer=time.process_time`).",
        "",
        markdown_table(("artifact", "size", "clock", "u2bench p50 ms", "timeit median ms", "difference",
                        "within ±15 %", "ratio per round"), check_rows) if check_rows else "(skipped)",
        "",
        "## GPU",
        "",
        gpu,
    ]
    if claims_text:
        lines += ["", "## The paper's real-time claims", "",
                  "`u2bench claims` (PyTorch FP32 on this CPU, batch 1, 320×320). Floors for the GTX 1080 Ti "
                  "and H200 are estimates from vendor figures, not measurements.", "", "```", claims_text,
                  "```"]
    return "\n".join(lines) + "\n"


def _short_name(model: str) -> str:
    return model if model.startswith("torch:") else Path(model).name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", action="append", default=[],
                    help="extra artifact rows, timed at their own size (repeatable)")
    ap.add_argument("--sizes", default="160,320",
                    help="input sides: 160 is the shipped weights' own, 320 the paper's")
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--min-time-s", type=float, default=5.0)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gpu-json", type=Path, default=None, help="results of tools/gpu_bench.py")
    ap.add_argument("--no-crosscheck", action="store_true")
    ap.add_argument("--crosscheck-rounds", type=int, default=10)
    ap.add_argument("--no-claims", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = [(s, s) for s in parse_batches(args.sizes)]  # same syntax: positive integers, comma-separated
    opts = LatencyOptions(batches=parse_batches(args.batch), warmup_s=args.warmup_s,
                          min_time_s=args.min_time_s, min_iters=args.min_iters,
                          threads=args.threads or default_threads())
    results: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_paths = {size: str(export_small_onnx(Path(tmp), size)) for size in sizes}
        for size in sizes:
            results += run_latency(["torch:small", onnx_paths[size]], replace(opts, size=size))
        if args.artifact:
            results += run_latency(args.artifact, opts)
        if not args.no_crosscheck:  # at the first size: the cheaper one, so that rounds stay short
            checks = crosscheck([onnx_paths[sizes[0]], "torch:small"], replace(opts, size=sizes[0]),
                                rounds=args.crosscheck_rounds)
    claims_report, claims_results = (None, [])
    if not args.no_claims:
        claims_opts = replace(opts, min_time_s=min(args.min_time_s, 3.0), min_iters=3, warmup_s=1.0)
        claims_report, claims_results = claims.run((320, 320), True, claims_opts)
    for r in [*results, *checks]:  # the temporary ONNX files are gone; keep their names, not paths
        r["model"] = _short_name(r["model"])
    command = " ".join(["python tools/make_benchmarks.py", *(sys.argv[1:] if argv is None else argv)])
    text = render(results, checks, claims.render(claims_report) if claims_report else None,
                  gpu_section(args.gpu_json), command)
    write_json(args.out.with_suffix(".json"),
               {"cpu": results, "crosscheck": checks, "claims": claims_report, "claims_runs": claims_results})
    tmp_md = args.out.with_suffix(".md.tmp")
    tmp_md.write_text(text)
    tmp_md.replace(args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
