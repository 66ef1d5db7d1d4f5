"""INT8 against FP32 ONNX Runtime speed on this CPU, both variants, in one interleaved run each.

    python tools/int8_speed.py                      # writes docs/int8_speed.md and docs/int8_speed.json
    python tools/int8_speed.py --full-weights u2net.pth --num 300

For each variant: export the FP32 ONNX at 320×320 (batch 1), quantize it for ``--target cpu`` twice
(the plain Q/DQ recipe and the shipped one, with the graph rewrites of
``u2deploy.calibration.rewrites`` and ``u2deploy.calibration.qdq_rewrites``), calibrated on ECSSD
0001-0800 (never the held-out 0801-1000), then time the three files with ``u2bench latency
--paired`` (short alternating rounds; the ratios are medians of per-round ratios, so the shared
machine's drifting load cancels) at each thread count. The small model uses the demo weights; the
full model the checkpoint given, else random weights with BatchNorm statistics re-estimated on
ECSSD images (speed does not depend on them). Each thread count's ratio is set against this CPU's
INT8 ceiling (``u2bench int8-ceiling``, :mod:`u2deploy.bench.int8_ceiling`), measured in the same
run: what INT8 gains is a property of the CPU (VNNI or not), so the target is relative to it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("int8_speed")


def calibration_folder(tmp: Path) -> Path:
    """ECSSD 0001-0800 as links (the held-out 0801-1000 stay unseen)."""
    from u2deploy.data.samples import ecssd_root

    root = ecssd_root()
    if root is None:
        sys.exit("int8_speed: needs ../shared/datasets/ECSSD for calibration images")
    folder = tmp / "calib"
    folder.mkdir()
    for i in range(1, 801):
        (folder / f"{i:04d}.jpg").symlink_to(root / "images" / f"{i:04d}.jpg")
    return folder


def full_weights(tmp: Path, explicit: Path | None, calib: Path) -> Path:
    if explicit is not None:
        return explicit
    from u2deploy.data import preprocess
    from u2deploy.data.images import read_image
    from u2deploy.model.synthetic import random_calibrated, save_state_dict

    images = [read_image(p) for p in sorted(calib.iterdir())[:8]]
    batches = [preprocess.fast(images[i:i + 4], (320, 320)) for i in (0, 4)]
    return save_state_dict(random_calibrated("full", batches, seed=0), tmp / "u2net_random_bn.pth")


def measure_variant(variant: str, weights: Path | None, calib: Path, tmp: Path, args: argparse.Namespace
                    ) -> dict[str, Any]:
    from u2deploy.bench.latency import LatencyOptions
    from u2deploy.bench.paired import run_paired
    from u2deploy.calibration.quantize import RECIPES, quantize_model
    from u2deploy.export.onnx import export_onnx

    fp32 = export_onnx(variant, weights, tmp / f"{variant}_320_fp32.onnx", size=(320, 320), n_verify=2).path
    plain_recipe = replace(RECIPES["cpu"], mlas_conv_shapes=False, shared_concat_ranges=False, ort_cpu_qdq=False)
    cache = tmp / f"{variant}.calib.json"
    plain = quantize_model(fp32, calib, tmp / f"{variant}_320_int8_plain.onnx", target="cpu", num=args.num,
                           cache=cache, recipe=plain_recipe, progress=False).path
    shipped = quantize_model(fp32, calib, tmp / f"{variant}_320_int8.onnx", target="cpu", num=args.num,
                             cache=cache, progress=False)
    runs = []
    for threads in args.threads:
        opts = LatencyOptions(warmup_s=2.0, min_time_s=args.min_time_s, threads=threads)
        runs.append(run_paired([str(fp32), str(plain), str(shipped.path)], opts))
    return {"variant": variant, "rewritten_nodes": shipped.rewritten_nodes, "runs": runs,
            "calibration_images": args.num, "weight_bits": shipped.manifest["weight_bits"]}


def _hardware(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's hardware record, with every thread count used (rows differ)."""
    threads = sorted({run[0]["threads"] for result in results for run in result["runs"]})
    return {**results[0]["runs"][0][0]["hardware"], "threads_used": ", ".join(map(str, threads))}


def summarize(rewritten: list[str], names_up_to: int = 8) -> list[str]:
    """'node: what' lines grouped by what: the nodes named where few, else counted."""
    groups: dict[str, list[str]] = {}
    for line in rewritten:
        node, _, what = line.rpartition(": ")
        groups.setdefault(what, []).append(node)
    return [f"{what}: {', '.join(nodes)}" if len(nodes) <= names_up_to else f"{what}: {len(nodes)} nodes"
            for what, nodes in groups.items()]


def render(results: list[dict[str, Any]], ceilings: dict[int, dict[str, Any]], command: str,
           json_name: str) -> str:
    from u2deploy.bench.int8_ceiling import table
    from u2deploy.bench.report import markdown_table
    from u2deploy.hardware import isa_line, one_line

    hw = _hardware(results)
    lines = ["# INT8 against FP32 on this CPU", "",
             f"Generated by `{command}`; raw results in `{json_name}`.", "",
             f"Measured on {one_line(hw)}. **These ratios hold for this CPU only**: on x86 without VNNI "
             "(AVX2 only) u8×s8 runs on VPMADDUBSW and gains far less; run the command on yours.", "",
             "Batch 1, 320×320, ONNX Runtime CPU, plain sessions, INT8 `--target cpu` (QDQ, uint8 activations, "
             f"{results[0]['weight_bits']}-bit symmetric per-channel weights: saturation-safe on every x86 CPU). "
             "*Plain*: the same recipe without the graph rewrites; *shipped*: what `u2export quantize --target cpu` "
             "writes. Ratio = median over rounds of (INT8 ms / FP32 ms) in the same round; spread = min–max of "
             "those per-round ratios. The ceilings are this CPU's (table below): *graph*, the single-conv "
             "graph of `u2bench int8-ceiling` (input Q, transposes and output DQ included); *kernel*, its "
             "QLinearConv against the float Conv alone. Targets: ≤ 1.10× the ceiling on AVX2-only CPUs, "
             "≤ 1.20× (aim 1.10×) on VNNI ones.", "",
             "| variant | threads | FP32 ms | plain INT8 ms | plain ratio | shipped INT8 ms | shipped ratio "
             "| spread | ÷ graph ceiling | ÷ kernel ceiling | rounds | load avg |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for result in results:
        for fp32, plain, shipped in result["runs"]:
            load = f"{fp32['load_average_start'][0]} → {fp32['load_average_end'][0]}" if fp32[
                "load_average_start"] else "n/a"
            ceiling = ceilings[fp32["threads"]]
            lines.append(f"| {result['variant']} | {fp32['threads']} | {fp32['median_ms']:.1f} | "
                         f"{plain['median_ms']:.1f} | {plain['ratio']:.3f}× | {shipped['median_ms']:.1f} | "
                         f"**{shipped['ratio']:.3f}×** | {shipped['ratio_min']:.3f}–{shipped['ratio_max']:.3f}× | "
                         f"{shipped['ratio'] / ceiling['ceiling_ratio']:.2f}× | "
                         f"{shipped['ratio'] / ceiling['kernel_ratio']:.2f}× | {shipped['rounds']} | {load} |")
    for threads, ceiling in ceilings.items():
        lines += ["", f"Ceiling at {threads} thread{'s' if threads > 1 else ''}: graph "
                  f"**{ceiling['ceiling_ratio']:.3f}×**, kernel **{ceiling['kernel_ratio']:.3f}×** "
                  f"({isa_line(ceiling['hardware']['cpu'])}).", "", markdown_table(*table(ceiling))]
    lines += ["", "Rewrites (exact: outputs unchanged up to float summation order and rounding ties):", ""]
    for result in results:
        lines.append(f"- {result['variant']}: " + "; ".join(summarize(result["rewritten_nodes"])) + ".")
    lines += ["", "Calibration: ECSSD 0001-0800, "
              f"{results[0]['calibration_images']} images, minmax (speed does not depend on the method).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-weights", type=Path, default=None, help="u2net.pth (default: random, BN re-estimated)")
    ap.add_argument("--num", type=int, default=32, help="calibration images")
    ap.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2])
    ap.add_argument("--min-time-s", type=float, default=40.0, help="timed seconds per paired run")
    ap.add_argument("--variants", default="small,full")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "int8_speed.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from u2deploy.files import atomic_path, write_json

    with tempfile.TemporaryDirectory(prefix="u2int8.") as tmp_dir:
        tmp = Path(tmp_dir)
        calib = calibration_folder(tmp)
        results = []
        for variant in args.variants.split(","):
            weights = full_weights(tmp, args.full_weights, calib) if variant == "full" else None
            results.append(measure_variant(variant, weights, calib, tmp, args))
    from u2deploy.bench.int8_ceiling import measure

    ceilings = {threads: measure(threads) for threads in args.threads}
    command = "python tools/int8_speed.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    write_json(args.out.with_suffix(".json"), {"variants": results, "ceilings": list(ceilings.values())})
    with atomic_path(args.out) as out:
        out.write_text(render(results, ceilings, command.strip(), args.out.with_suffix(".json").name))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
