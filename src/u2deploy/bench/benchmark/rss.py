"""Peak RSS per artifact, each in a fresh process of its own.

In a paired run every runner lives in one process, so its RSS belongs to none of them. Each artifact
therefore gets a spawned interpreter that imports u2deploy, opens only that artifact and serves a few
seconds of end-to-end calls (model calls without images); its VmHWM, loading included, is the row's
``peak_rss_bytes``. It includes the interpreter, NumPy and Pillow baseline every row shares, recorded
beside it as ``rss_baseline_bytes`` (the same process before it opens the artifact).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ..latency import LatencyOptions
from .options import BenchmarkOptions
from .rows import Row
from .timing import latency_options

RSS_SECONDS = 2.0  # calls served by each fresh process before its peak RSS is read
RSS_TIMEOUT_S = 300.0


def peak_rss_bytes() -> int:
    """This process's peak RSS. VmHWM, where Linux has it: ``ru_maxrss`` would do elsewhere, but Linux carries
    it across ``exec``, so a spawned child would report the RSS of the parent it was forked from."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def serving_peak_rss(artifact: str, options: LatencyOptions, size: tuple[int, int],
                     seconds: float = RSS_SECONDS) -> dict[str, int]:
    """Run in a fresh process: its peak RSS after importing u2deploy's runtime (the baseline), and after
    opening ``artifact`` and serving ``seconds`` of calls (end to end on ``options.images``, if set)."""
    import numpy as np

    from ...data import postprocess, preprocess  # noqa: F401  (what every row's end-to-end calls share)
    from ..latency import open_for_timing
    from ..timing import end_to_end_step, model_step

    baseline = peak_rss_bytes()
    runner, _ = open_for_timing(artifact, options)
    with runner:
        step = (end_to_end_step(runner, 1, size, Path(options.images)) if options.images else
                model_step(runner, np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)))
        start, calls = time.perf_counter(), 0
        while calls < 3 or time.perf_counter() - start < seconds:
            step.call()
            runner.synchronize()
            calls += 1
    return {"peak_rss_bytes": peak_rss_bytes(), "rss_baseline_bytes": baseline, "calls": calls}


def measure_rows(rows: Sequence[Row], opts: BenchmarkOptions, size: tuple[int, int],
                 images: Path | None) -> list[str]:
    """:func:`serving_peak_rss` of each row's artifact, one spawned process after another; fills
    ``peak_rss_bytes`` and returns a note for each row a child could not measure (it costs that row the
    number, never the run)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    options = latency_options(opts, size, images)
    notes = []
    for row in tqdm(rows, desc="peak RSS, one process each", unit="artifact", leave=False,
                    disable=not opts.progress):
        try:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                found = pool.submit(serving_peak_rss, str(row.artifact), options, size).result(timeout=RSS_TIMEOUT_S)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            notes.append(f"{row.artifact}: peak RSS not measured ({type(exc).__name__}: {first})")
            continue
        row.peak_rss_bytes, row.rss_baseline_bytes = found["peak_rss_bytes"], found["rss_baseline_bytes"]
    return notes


def method(images: Path | None) -> str:
    """What the JSON's ``timing.peak_rss`` says was measured."""
    served = "end-to-end calls" if images is not None else "model calls"
    return (f"VmHWM of a fresh spawned process that imports u2deploy, opens only this artifact and serves "
            f"{RSS_SECONDS:g} s of {served}; rss_baseline_bytes is the same process before it opens the artifact")
