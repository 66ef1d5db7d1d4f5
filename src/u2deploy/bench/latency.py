"""Latency and throughput of any artifact: open it for timing, time it at each batch size, one record per run.

How a call is timed is :mod:`.timing` (warm-up, synchronised calls, host and device clocks, CPU
time); statistics are :mod:`.stats`; peak RSS is :mod:`.memory`. By default only the model is timed
(the runner's :meth:`~u2deploy.engines.base.Runner.bind`: device tensors in and out where the
runner allows); ``end_to_end`` times decoding, preprocessing, inference and postprocessing of real
images. Everything backend-specific is an option of the runner, declared by its ``open`` and
refused by :func:`~u2deploy.engines.open_runner` when it does not apply.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import hardware
from ..engines import open_runner, runner_options
from ..engines.base import Runner
from ..errors import U2Error
from ..formats import backend_for, for_artifact
from .memory import PeakHostMemory
from .stats import Stats
from .timing import Step, end_to_end_step, find_images, model_step, time_step

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- options

@dataclass(frozen=True)
class LatencyOptions:
    """Everything ``u2bench latency`` can vary; one instance describes one sweep."""

    backend: str = "auto"
    device: str | None = None  # None: cpu, except for TensorRT engines (cuda)
    precision: str | None = None  # None: fp32 for PyTorch, the artifact's own otherwise
    batches: tuple[int, ...] = (1,)
    size: tuple[int, int] | None = None  # None: the artifact's fixed size, else the weights' native size
    weights: str | None = None
    warmup_s: float = 2.0
    min_time_s: float = 5.0
    min_iters: int = 10
    threads: int | None = None  # None: every usable CPU
    end_to_end: bool = False
    images: str | None = None
    channels_last: bool = False
    cuda_graphs: bool = False
    compile: bool = False
    tf32: bool | None = None  # None: leave PyTorch's default (cuDNN convolutions in TF32 on Ampere+)
    hint: str | None = None  # OpenVINO's performance hint (latency or throughput); None: the runner's default


def default_threads() -> int:
    return hardware.usable_cpus()


def parse_batches(text: str | Sequence[int]) -> tuple[int, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        batches = tuple(int(b) for b in items if str(b).strip())
    except ValueError:
        raise U2Error(f"--batch {text}: expected comma-separated integers such as 1,4,8") from None
    if not batches or min(batches) < 1:
        raise U2Error(f"--batch {text}: batch sizes must be positive")
    return batches


# ------------------------------------------------------------------------------------ opening a runner

def check_models(artifacts: Sequence[str], opts: LatencyOptions) -> None:
    """``--weights`` is for the PyTorch models of a comparison; with none among them it is a mistake."""
    if opts.weights is not None and all(for_artifact(a).key != "torch" for a in artifacts):
        raise U2Error(f"--weights {opts.weights}: applies to torch:full / torch:small only "
                      "(an exported file carries its own weights)")


def open_for_timing(artifact: str, opts: LatencyOptions) -> tuple[Runner, dict[str, Any]]:
    """The runner and what the result should say about how it was opened.

    PyTorch without weights of its own (the full model ships none) runs random ones: speed does not
    depend on the weights' values, and timing must not require the authors' 176 MB checkpoint.
    """
    backend = backend_for(artifact, opts.backend)
    exported = for_artifact(artifact).key != "torch"
    taken = runner_options(artifact, opts.backend)
    wanted: dict[str, Any] = {
        # --weights and --precision are PyTorch's: an exported file carries its own (checked below)
        "weights": None if exported else opts.weights, "device": opts.device,
        "precision": None if exported else opts.precision,
        "channels_last": opts.channels_last or None, "cuda_graphs": opts.cuda_graphs or None,
        "compile": opts.compile or None, "tf32": opts.tf32, "hint": opts.hint,
        "random_if_no_weights": True if not exported else None,
        "threads": (opts.threads or default_threads()) if "threads" in taken else None,
    }
    runner = open_runner(artifact, backend.name, **wanted)
    if exported and opts.precision is not None and opts.precision != runner.info.precision:
        runner.close()
        raise U2Error(f"{artifact} is {runner.info.precision}; --precision {opts.precision} does not apply "
                      f"(the precision of an exported artifact is fixed when it is built)")
    return runner, {"backend": backend.name, "weights": runner.info.spec.weights}


def resolve_size(runner: Runner, requested: tuple[int, int] | None) -> tuple[int, int]:
    """The artifact's fixed size, else ``--size``, else the weights' native size, else 320."""
    return runner.info.size_for(requested)


def usable_batches(runner: Runner, batches: Sequence[int]) -> list[int]:
    accepted = runner.info.batch_range
    if accepted is None:
        return list(batches)
    lo, hi = accepted
    kept = [b for b in batches if lo <= b <= hi]
    skipped = [b for b in batches if b not in kept]
    if skipped:
        log.info("%s accepts batch %s only; skipping %s", runner.info.path,
                 lo if lo == hi else f"{lo}-{hi}", ",".join(map(str, skipped)))
    if not kept:
        raise U2Error(f"{runner.info.path}: accepts batch {lo}-{hi}; none of --batch "
                      f"{','.join(map(str, batches))} fits")
    return kept


# ------------------------------------------------------------------------------------------ one run

def result_header(runner: Runner, artifact: str, notes: dict[str, Any], batch_size: int, size: tuple[int, int],
                  mode: str, step: Step) -> dict[str, Any]:
    """What was timed: the first fields of every latency result, sequential or paired."""
    return {"model": artifact, "variant": runner.info.spec.variant, **notes, "device": runner.info.device,
            "precision": runner.info.precision, "batch": batch_size, "size": list(size), "mode": mode,
            "timed": step.covers, "options": runner.settings()}


def measure_runner(runner: Runner, artifact: str, notes: dict[str, Any], opts: LatencyOptions,
                   batch_size: int, size: tuple[int, int]) -> dict[str, Any]:
    """One result: ``batch_size`` images at ``size`` through an open runner."""
    if opts.end_to_end:
        step = end_to_end_step(runner, batch_size, size, find_images(opts.images))
    else:
        rng = np.random.default_rng(0)
        step = model_step(runner, rng.standard_normal((batch_size, 3, *size), dtype=np.float32))
    runner.reset_device_memory()
    with PeakHostMemory() as memory:
        samples = time_step(step, runner.synchronize, opts.warmup_s, opts.min_time_s, opts.min_iters)
    host = Stats.of(samples.host_ms)
    device = Stats.of(samples.device_ms) if samples.device_ms else None
    device_memory = runner.device_memory()
    header = result_header(runner, artifact, notes, batch_size, size, "end-to-end" if opts.end_to_end else "model",
                           step)
    header["options"]["tf32_applies"] = hardware.tf32_capable() if runner.info.device == "cuda" else False
    return {
        **header,
        "iterations": host.n,
        "warmup_iterations": samples.warmup_iters,
        "duration_s": round(samples.duration_s, 3),
        "latency_ms": host.as_dict(),  # host latency: call to result ready
        "device_ms": device.as_dict() if device else None,  # device time from the runner's timer
        "cpu_time_ms": Stats.of(samples.cpu_ms).as_dict(),  # process CPU time per call, all threads
        "throughput_ips": batch_size * host.n / samples.duration_s,
        "fps": 1e3 / host.mean,  # batches completed per second, one at a time (= images/s at batch 1)
        "stages_ms": {k: sum(v) / len(v) for k, v in step.stages.items() if v} or None,
        "memory": {**memory.as_dict(), **({"device_peak_mib": round(device_memory.peak_bytes / 2**20, 1),
                                          "device_method": device_memory.method} if device_memory else {})},
        "hardware": hardware.describe(opts.threads or default_threads()),
    }


def run_latency(artifacts: Sequence[str], opts: LatencyOptions) -> list[dict[str, Any]]:
    """Measure every artifact at every batch size; results in order (artifact, then batch)."""
    check_models(artifacts, opts)
    results: list[dict[str, Any]] = []
    for artifact in artifacts:
        runner, notes = open_for_timing(artifact, opts)
        with runner:
            size = resolve_size(runner, opts.size)
            for batch_size in usable_batches(runner, opts.batches):
                log.info("timing %s, batch %d, %dx%d ...", artifact, batch_size, *size)
                results.append(measure_runner(runner, artifact, notes, opts, batch_size, size))
    return results
