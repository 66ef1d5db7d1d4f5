"""Timing: every artifact and PyTorch eager in one paired run (:func:`~u2deploy.bench.paired.run_paired`,
what ``u2bench latency --paired`` runs), model only, then end to end on real images (decode, preprocess,
infer, postprocess), batch 1, ratios per round to the FP32 ONNX.

Paired, because on a shared machine the load drifts: neighbouring short bursts see the same machine,
so their ratio survives the noise that absolute milliseconds do not.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..latency import LatencyOptions
from ..paired import run_paired
from .options import BenchmarkOptions
from .rows import Row

# What the JSON's "timing" block keeps of the first (baseline) result of each paired run.
SUMMARY_KEYS = ("mode", "baseline", "threads", "rounds", "calls_per_round", "settle_s", "duration_s",
                "load_average_start", "load_average_end", "timed", "batch", "size")


def latency_options(opts: BenchmarkOptions, size: tuple[int, int], images: Path | None = None) -> LatencyOptions:
    """How every artifact is opened and timed; ``--weights`` reaches the PyTorch reference only (an exported
    file carries its own), so PyTorch is timed with the weights it was gated with."""
    return LatencyOptions(device=None if opts.device == "cpu" else opts.device, size=size, threads=opts.threads,
                          warmup_s=opts.warmup_s, min_time_s=opts.min_time_s,
                          weights=str(opts.weights) if opts.weights else None,
                          end_to_end=images is not None, images=str(images) if images is not None else None)


def time_rows(rows: Sequence[Row], opts: BenchmarkOptions, size: tuple[int, int],
              images: Path | None) -> tuple[dict[str, Any], dict[str, float]]:
    """Time ``rows`` (the first is the baseline) model only, then end to end when ``images`` is given; fill
    their latency fields. Returns the JSON's timing summary and the seconds each run took."""
    artifacts = [str(r.artifact) for r in rows]
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    model = _paired(artifacts, latency_options(opts, size), opts, "timing, model only (paired)")
    for row, result in zip(rows, model, strict=True):
        row.latency_ms_p50, row.ratio = result["median_ms"], result["ratio"]
        row.ratio_min, row.ratio_max, row.rounds = result["ratio_min"], result["ratio_max"], result["rounds"]
        row.round_ms = result["round_ms"]
    summary = {"model": {k: model[0].get(k) for k in SUMMARY_KEYS}}
    seconds["timing_model"] = time.perf_counter() - t0
    if images is not None:
        t0 = time.perf_counter()
        e2e = _paired(artifacts, latency_options(opts, size, images), opts, "timing, end to end (paired)")
        for row, result in zip(rows, e2e, strict=True):
            row.e2e_ms_p50, row.e2e_ratio = result["median_ms"], result["ratio"]
            row.e2e_ratio_min, row.e2e_ratio_max = result["ratio_min"], result["ratio_max"]
        summary["end_to_end"] = {**{k: e2e[0].get(k) for k in SUMMARY_KEYS}, "images": str(images)}
        seconds["timing_end_to_end"] = time.perf_counter() - t0
    return summary, seconds


def _paired(artifacts: list[str], options: LatencyOptions, opts: BenchmarkOptions,
            desc: str) -> list[dict[str, Any]]:
    expected = len(artifacts) * (opts.warmup_s + 0.5) + 1.8 * opts.min_time_s
    with progress_bar(desc, expected, opts.progress):
        return run_paired(artifacts, options)


@contextlib.contextmanager
def progress_bar(desc: str, seconds: float, enabled: bool) -> Iterator[None]:
    """A progress bar over an estimated duration (the timing loops have no hook of their own); it ticks
    once a second, so it costs the timed calls nothing they would notice."""
    if not enabled:
        yield
        return
    bar = tqdm(total=max(1, round(seconds)), desc=desc, unit="s", leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/~{total} s")
    stop = threading.Event()
    start = time.perf_counter()

    def tick() -> None:
        while not stop.wait(1.0):
            bar.n = min(bar.total, int(time.perf_counter() - start))
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
