"""What is timed (a :class:`Step`) and the loop that times it, as trtexec reports it.

- warm-up runs (at least ``warmup_s`` seconds and two calls) are never timed;
- the timed loop runs at least ``min_time_s`` seconds and ``min_iters`` calls; each call is
  synchronised, so a sample is the latency of one batch, not a pipelined average;
- on a GPU two clocks are kept apart: *host latency* (wall clock from the call to the result being
  ready) and *device time* (the runner's device timer around the enqueued work);
- each call's process CPU time (all threads) is kept beside its wall time: on a shared machine it
  shows how much of a slow call was waiting for a core.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engines.base import DeviceTimer, Runner
from ..errors import U2Error

_DEFAULT_IMAGES = ("../shared/datasets/ECSSD/images",)


@dataclass
class Step:
    """One timed call, what it covers, and (on GPUs) a device clock for it."""

    call: Callable[[], object]
    covers: str
    device_timer: DeviceTimer | None = None
    stages: dict[str, list[float]] = field(default_factory=dict)  # end-to-end breakdown, ms per call


def model_step(runner: Runner, batch: np.ndarray) -> Step:
    """Model inference only, the way the runner binds it (device tensors in and out where it can)."""
    bound = runner.bind(batch)
    return Step(bound.call, bound.covers, runner.device_timer())


def find_images(explicit: str | None) -> Path:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise U2Error(f"--images {explicit}: no such folder")
        return path
    repo_root = Path(__file__).resolve().parents[3]
    for candidate in _DEFAULT_IMAGES:
        for base in (Path.cwd(), repo_root):
            if (base / candidate).is_dir():
                return (base / candidate).resolve()
    raise U2Error("--end-to-end needs images: pass --images DIR (e.g. ../shared/datasets/ECSSD/images)")


def end_to_end_step(runner: Runner, batch_size: int, size: tuple[int, int], images: Path) -> Step:
    """Decode, preprocess (fast), infer, postprocess (fast) a batch of real images, cycling through them."""
    from ..data import postprocess, preprocess
    from ..data.images import list_images, read_image

    files: Iterator[Path] = itertools.cycle(list_images(images))
    mean, std = runner.info.spec.mean, runner.info.spec.std
    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "infer": [], "postprocess": []}

    def call() -> list[np.ndarray]:
        t0 = time.perf_counter()
        decoded = [read_image(next(files)) for _ in range(batch_size)]
        t1 = time.perf_counter()
        x = preprocess.fast(decoded, size, mean, std)
        t2 = time.perf_counter()
        pred = runner.saliency(x)
        t3 = time.perf_counter()
        masks = postprocess.fast(pred, [im.shape[:2] for im in decoded])
        t4 = time.perf_counter()
        for name, (a, b) in zip(stages, ((t0, t1), (t1, t2), (t2, t3), (t3, t4)), strict=True):
            stages[name].append((b - a) * 1e3)
        return masks

    return Step(call, "decode + preprocess.fast + infer + postprocess.fast, real images", None, stages)


@dataclass
class Samples:
    host_ms: list[float]
    device_ms: list[float] | None
    cpu_ms: list[float]  # process CPU time per call, all threads
    warmup_iters: int
    duration_s: float  # wall time of the timed loop


def time_step(step: Step, synchronize: Callable[[], None], warmup_s: float, min_time_s: float,
              min_iters: int, clock: Callable[[], float] = time.perf_counter,
              cpu_clock: Callable[[], float] = time.process_time) -> Samples:
    """Warm up, then time synchronised calls until both ``min_time_s`` and ``min_iters`` are reached.

    Beside wall time each call's process CPU time is kept: on a shared machine it does not grow while
    the process waits for a core, so it shows whether a slow run was slow or only descheduled.
    """
    warmup_iters = 0
    start = clock()
    while warmup_iters < 2 or clock() - start < warmup_s:
        step.call()
        warmup_iters += 1
    synchronize()
    for stage in step.stages.values():
        stage.clear()
    host: list[float] = []
    device: list[float] | None = [] if step.device_timer is not None else None
    cpu: list[float] = []
    loop_start = clock()
    while len(host) < min_iters or clock() - loop_start < min_time_s:
        c0 = cpu_clock()
        t0 = clock()
        if step.device_timer is not None:
            step.device_timer.start()
        step.call()
        if step.device_timer is not None:
            step.device_timer.stop()
        synchronize()
        host.append((clock() - t0) * 1e3)
        cpu.append((cpu_clock() - c0) * 1e3)
        if device is not None:
            device.append(step.device_timer.elapsed_ms())  # type: ignore[union-attr]
    return Samples(host, device, cpu, warmup_iters, clock() - loop_start)
