"""Paired timing: speed *ratios* between artifacts from one interleaved run.

On a shared machine the load changes from second to second, so two artifacts timed one after the
other (``run_latency``) see different machines and their ratio carries the drift. Here every artifact
runs a short burst of ``k`` calls in turn, round after round; neighbouring bursts see nearly the same
load, so the per-round ratio to the first artifact (the baseline) cancels most of it, and the median
over rounds drops the rounds a burst of load hit one side only. The burst order is reversed every
other round, so no artifact always runs right after the same one.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import hardware
from ..errors import U2Error
from .latency import (
    LatencyOptions,
    check_models,
    default_threads,
    open_for_timing,
    resolve_size,
    result_header,
    usable_batches,
)
from .timing import Step, end_to_end_step, find_images, model_step

log = logging.getLogger(__name__)

MIN_ROUNDS = 5  # a median of fewer ratios is one unlucky round away from wrong
ROUND_S = 0.3  # target wall time of the slowest artifact's burst: short enough to share the load
# Untimed pause before each burst when runners use several threads: ONNX Runtime's idle workers spin
# for a while after a run, and on a small machine the previous artifact's spinning pool steals cores
# from the next one (measured here, 2 cores: U²-Net† INT8/FP32 0.348× without the pause, 0.325× with).
SETTLE_S = 0.05


def _warm_up(step: Step, synchronize: Callable[[], None], warmup_s: float,
             clock: Callable[[], float]) -> float:
    """Untimed calls (at least ``warmup_s`` seconds and three); the median ms of the later half.

    The median sizes the bursts; the first calls (allocations, lazy initialisation, oneDNN primitive
    creation in PyTorch) would inflate it, and bursts of one call let the previous artifact's threads
    disturb every sample (seen in u2bench benchmark: one-call bursts, ratios bimodal by burst order).
    """
    times: list[float] = []
    start = clock()
    while len(times) < 3 or clock() - start < warmup_s:
        t0 = clock()
        step.call()
        synchronize()
        times.append((clock() - t0) * 1e3)
    return statistics.median(times[len(times) // 2:])


def calls_per_round(per_call_ms: Sequence[float], round_s: float = ROUND_S) -> int:
    """Calls per burst so that the slowest artifact's burst lasts about ``round_s`` (at least one)."""
    return max(1, round(round_s * 1e3 / max(per_call_ms)))


def _burst_ms(step: Step, synchronize: Callable[[], None], k: int, clock: Callable[[], float]) -> float:
    """Mean wall ms per call over ``k`` synchronised calls."""
    t0 = clock()
    for _ in range(k):
        step.call()
        synchronize()
    return (clock() - t0) * 1e3 / k


def interleave(steps: Sequence[tuple[Step, Callable[[], None]]], k: int, min_time_s: float,
               min_rounds: int = MIN_ROUNDS, clock: Callable[[], float] = time.perf_counter,
               settle_s: float = 0.0) -> tuple[list[list[float]], float]:
    """Rounds of ``k``-call bursts until both ``min_rounds`` and ``min_time_s`` of timed time are reached.

    Returns the mean ms per call of every burst, one list per step (index = round), and the timed
    seconds (the ``settle_s`` pauses before each burst are not counted).
    """
    per_step: list[list[float]] = [[] for _ in steps]
    timed = 0.0
    rounds = 0
    while rounds < min_rounds or timed < min_time_s:
        order = range(len(steps)) if rounds % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            step, synchronize = steps[i]
            if settle_s:
                time.sleep(settle_s)
            ms = _burst_ms(step, synchronize, k, clock)
            per_step[i].append(ms)
            timed += ms * k / 1e3
        rounds += 1
    return per_step, timed


def _check(artifacts: Sequence[str], opts: LatencyOptions) -> None:
    if len(artifacts) < 2:
        raise U2Error("--paired needs at least two --model values (the first is the baseline)")
    if len(opts.batches) != 1:
        raise U2Error(f"--paired times one batch size; --batch {','.join(map(str, opts.batches))} is a sweep")


def run_paired(artifacts: Sequence[str], opts: LatencyOptions, round_s: float = ROUND_S) -> list[dict[str, Any]]:
    """Time ``artifacts`` interleaved; one result per artifact, with its ratio to ``artifacts[0]``.

    All runners stay open together, at one batch and one input size (a ratio between different
    inputs would measure the inputs). ``opts.min_time_s`` bounds the timed time from below, with at
    least ``MIN_ROUNDS`` rounds; ``opts.min_iters`` does not apply. ``round_s`` sizes the bursts.
    """
    _check(artifacts, opts)
    check_models(artifacts, opts)
    threads = opts.threads or default_threads()
    clock = time.perf_counter
    with contextlib.ExitStack() as stack:
        opened = []
        for artifact in artifacts:
            runner, notes = open_for_timing(artifact, opts)
            stack.enter_context(runner)
            opened.append((artifact, runner, notes, resolve_size(runner, opts.size),
                           usable_batches(runner, opts.batches)[0]))
        sizes = {size for _, _, _, size, _ in opened}
        if len(sizes) > 1:
            listed = ", ".join(f"{a} {s[0]}x{s[1]}" for a, _, _, s, _ in opened)
            raise U2Error(f"--paired needs one input size for all models ({listed}); "
                          f"--size sets it for models that accept any")
        (size,) = sizes
        batch_size = opened[0][4]
        if opts.end_to_end:  # every artifact decodes, preprocesses and postprocesses the same images
            images = find_images(opts.images)
            steps = [(end_to_end_step(runner, batch_size, size, images), runner.synchronize)
                     for _, runner, _, _, _ in opened]
        else:
            batch = np.random.default_rng(0).standard_normal((batch_size, 3, *size), dtype=np.float32)
            steps = [(model_step(runner, batch), runner.synchronize) for _, runner, _, _, _ in opened]
        load_start = hardware.load_average()
        per_call = []
        for (artifact, *_), (step, synchronize) in zip(opened, steps, strict=True):
            log.info("warming up %s, batch %d, %dx%d ...", artifact, batch_size, *size)
            per_call.append(_warm_up(step, synchronize, opts.warmup_s, clock))
        k = calls_per_round(per_call, round_s)
        log.info("paired timing: %d call(s) per model per round, at least %d rounds and %.1f s",
                 k, MIN_ROUNDS, opts.min_time_s)
        settle_s = SETTLE_S if threads > 1 else 0.0
        round_ms, duration_s = interleave(steps, k, opts.min_time_s, clock=clock, settle_s=settle_s)
        load_end = hardware.load_average()
        base = round_ms[0]
        mode = "paired end-to-end" if opts.end_to_end else "paired"
        results = []
        for (artifact, runner, notes, _, _), (step, _), times in zip(opened, steps, round_ms, strict=True):
            ratios = [t / b for t, b in zip(times, base, strict=True)]
            results.append({
                **result_header(runner, artifact, notes, batch_size, size, mode, step),
                "baseline": artifacts[0],
                "threads": threads,
                "rounds": len(times),
                "calls_per_round": k,
                "settle_s": settle_s,
                "median_ms": statistics.median(times),
                "ratio": statistics.median(ratios),  # median over rounds of this round's ms / baseline's
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "round_ms": [round(t, 4) for t in times],
                "duration_s": round(duration_s, 3),
                "load_average_start": load_start,
                "load_average_end": load_end,
                "hardware": hardware.describe(threads),
            })
    return results

