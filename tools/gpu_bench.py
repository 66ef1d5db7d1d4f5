"""The GPU benchmark, prepared for a session that is lent a CUDA machine: one run, well under 5 minutes.

    python tools/gpu_bench.py --out "$OUT/gpu.json"          # then, anywhere:
    python tools/make_benchmarks.py --gpu-json gpu.json      # fills the GPU section of docs/benchmarks.md

PyTorch on CUDA, both variants at 320×320, batch 1 and 8: FP32 (TF32 convolutions on, PyTorch's default
from Ampere on), FP32 with TF32 off, and FP16 autocast; each eager and as a replayed CUDA graph. cuDNN's
autotuner is on for every run (recorded). The full model runs on random weights unless ``--weights-full``
is given (speed does not depend on the values). Runs in the source tree without installing the package;
needs only torch and numpy. Stops adding configurations after ``--budget-s`` seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from u2deploy.bench import claims  # noqa: E402
from u2deploy.bench.latency import LatencyOptions, run_latency  # noqa: E402
from u2deploy.bench.report import latency_text  # noqa: E402
from u2deploy.files import write_json  # noqa: E402

log = logging.getLogger("gpu_bench")
# (precision, tf32): TF32 matters only for FP32 convolutions.
PRECISIONS = (("fp32", True), ("fp32", False), ("fp16", None))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ.get("OUT", ".")) / "gpu.json"
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--min-time-s", type=float, default=1.5)
    ap.add_argument("--min-iters", type=int, default=100, help="100 so that p99 is reported")
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--weights-full", default=None)
    ap.add_argument("--weights-small", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        print("gpu_bench: PyTorch sees no CUDA device; nothing measured", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    base = LatencyOptions(device="cuda", batches=tuple(int(b) for b in args.batch.split(",")),
                          size=(args.size, args.size), warmup_s=1.0, min_time_s=args.min_time_s,
                          min_iters=args.min_iters)
    results: list[dict] = []
    skipped: list[str] = []
    for variant, weights in (("small", args.weights_small), ("full", args.weights_full)):
        for precision, tf32 in PRECISIONS:
            for graphs in (False, True):
                what = f"torch:{variant} {precision} tf32={tf32} graphs={graphs}"
                if time.perf_counter() - started > args.budget_s:
                    skipped.append(what)
                    continue
                opts = replace(base, precision=precision, tf32=tf32, cuda_graphs=graphs, weights=weights)
                try:
                    batch_results = run_latency([f"torch:{variant}"], opts)
                except Exception as exc:  # one failed configuration must not lose the others
                    log.warning("%s failed: %s", what, exc)
                    skipped.append(f"{what} ({type(exc).__name__}: {exc})")
                    continue
                for r in batch_results:
                    r["options"]["cudnn_benchmark"] = True
                results.extend(batch_results)
                torch.cuda.empty_cache()
    if not results:
        print("gpu_bench: every configuration failed", file=sys.stderr)
        return 1
    print(latency_text(results))
    local = claims.measure_ceilings("cuda", seconds=1.5)
    fp32_eager = [r for r in results if r["precision"] == "fp32" and not r["options"]["cuda_graphs"]
                  and r["options"]["tf32"] is not False]
    report = claims.check(size=(args.size, args.size), measured=fp32_eager, local=local)
    print("\n" + claims.render(report))
    write_json(args.out, {"results": results, "claims": report, "skipped": skipped,
                          "seconds": round(time.perf_counter() - started, 1)})
    print(f"\nresults: {args.out} ({time.perf_counter() - started:.0f} s; skipped: {skipped or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
