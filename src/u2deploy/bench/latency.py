"""Latency and throughput of any artifact, measured the way trtexec reports it.

Rules the numbers follow:

- warm-up runs (at least ``--warmup-s`` seconds and two calls) are never timed;
- the timed loop runs at least ``min_time_s`` seconds and ``min_iters`` calls; each call is
  synchronised, so a sample is the latency of one batch, not a pipelined average;
- percentiles are nearest-rank (each one is a real sample) and a percentile is reported only when
  enough samples exist for it to mean something: p99 needs 100, p90 needs 10; below that, ``None``;
- on a GPU two clocks are kept apart, as trtexec does: *host latency* (wall clock from the call to
  the result being ready) and *device time* (CUDA events around the enqueued work);
- by default only the model is timed (device tensors in, device tensors out where the runner allows);
  ``end_to_end`` times decoding, preprocessing, inference and postprocessing of real images;
- each call's process CPU time (all threads) is kept beside its wall time: on a shared machine
  it shows how much of a slow call was waiting for a core;
- peak host memory is the RSS high-water mark of this process during each run (warm-up included),
  reset per run through ``/proc/self/clear_refs`` where Linux allows it, else sampled by a thread;
  device memory is ``torch.cuda.max_memory_allocated`` for PyTorch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .. import hardware
from ..engines import open_runner
from ..engines.base import Runner
from ..errors import U2Error
from ..formats import for_artifact
from ..model.registry import default_weights, official_for

log = logging.getLogger(__name__)

PERCENTILES = (50, 90, 99)
# The fewest samples for which a percentile is more than the maximum in disguise.
MIN_SAMPLES = {50: 1, 90: 10, 99: 100}
DEFAULT_SIZE = 320
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
_FORMAT_BACKEND = {"torch": "torch", "onnx": "onnxruntime", "trt": "tensorrt", "openvino": "openvino"}
_TORCH_VARIANTS = {"torch:full": "full", "torch:small": "small"}
_DEFAULT_IMAGES = ("../shared/datasets/ECSSD/images",)


# ----------------------------------------------------------------------------------------- statistics

def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q % of the samples at or below it."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


@dataclass(frozen=True)
class Stats:
    """Summary of timing samples in milliseconds; percentiles without enough samples are ``None``."""

    n: int
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float
    std: float | None  # sample standard deviation; None for a single sample
    min: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        if len(samples_ms) == 0:
            raise ValueError("no timing samples")
        s = sorted(float(x) for x in samples_ms)
        n = len(s)
        pct = {q: percentile(s, q) if n >= MIN_SAMPLES[q] else None for q in PERCENTILES}
        mean = sum(s) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1)) if n > 1 else None
        return cls(n, pct[50], pct[90], pct[99], mean, std, s[0], s[-1])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_ms(value: float | None, q: int | None = None) -> str:
    """A latency for people: ``n/a (<100 runs)`` instead of a p99 that is really the maximum."""
    if value is None:
        return f"n/a (<{MIN_SAMPLES[q]} runs)" if q is not None else "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


# ------------------------------------------------------------------------------------- clocks, memory

class DeviceTimer(Protocol):
    """Device time of the work enqueued between ``start`` and ``stop`` (read after synchronising).

    A runner that owns a CUDA stream may offer one through a ``device_timer()`` method.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def elapsed_ms(self) -> float: ...


class TorchCudaEvents:
    """CUDA events on PyTorch's current stream."""

    def __init__(self) -> None:
        self._start = torch.cuda.Event(enable_timing=True)
        self._stop = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record()

    def stop(self) -> None:
        self._stop.record()

    def elapsed_ms(self) -> float:
        return self._start.elapsed_time(self._stop)


def _rss_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"{field_name}:\s+(\d+) kB", text)
    return int(match.group(1)) if match else None


class PeakHostMemory:
    """RSS high-water mark of this process over a ``with`` block.

    Linux keeps the mark (VmHWM) and lets a process reset it by writing 5 to /proc/self/clear_refs;
    where that fails, a thread samples VmRSS every 2 ms (which can miss a short spike).
    """

    def __init__(self) -> None:
        self.method = ""
        self.start_kib: int | None = None
        self.peak_kib: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakHostMemory:
        self.start_kib = _rss_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM, reset per run via /proc/self/clear_refs"
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
            self.peak_kib = self.start_kib
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            now = _rss_kib("VmRSS")
            if now is not None and (self.peak_kib is None or now > self.peak_kib):
                self.peak_kib = now

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak_kib = _rss_kib("VmHWM")

    def as_dict(self) -> dict[str, Any]:
        def mib(kib: int | None) -> float | None:
            return round(kib / 1024, 1) if kib is not None else None

        return {"host_peak_rss_mib": mib(self.peak_kib), "host_rss_at_start_mib": mib(self.start_kib),
                "host_method": self.method}


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


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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

def _resolve_backend(artifact: str, backend: str, device: str | None) -> tuple[str, dict[str, Any]]:
    """The backend name and the ``open_runner`` options that select it (device or ORT provider)."""
    if backend not in BACKENDS:
        raise U2Error(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    fmt = for_artifact(artifact)
    native = _FORMAT_BACKEND[fmt.key]
    chosen = native if backend == "auto" else backend
    if fmt.key == "trt":
        if chosen != "tensorrt":
            raise U2Error(f"{artifact}: a TensorRT engine runs only with --backend tensorrt")
        if device not in (None, "cuda"):
            raise U2Error(f"{artifact}: TensorRT engines run on cuda, not {device}")
        return "tensorrt", {"device": "cuda"}
    if fmt.key == "openvino":
        if chosen != "openvino" or device not in (None, "cpu"):
            raise U2Error(f"{artifact}: an OpenVINO IR runs only with --backend openvino, on the CPU")
        return "openvino", {"device": "cpu"}
    if fmt.key == "onnx":
        if chosen == "torch":
            raise U2Error(f"{artifact}: --backend torch runs torch:full or torch:small, not ONNX files")
        if chosen == "tensorrt":  # ONNX Runtime's TensorRT execution provider
            return "onnxruntime", {"device": "tensorrt"}
        return "onnxruntime", {"device": device or "cpu"}
    if chosen != "torch":
        raise U2Error(f"{artifact}: --backend {chosen} needs an exported file (.onnx / .engine)")
    return "torch", {"device": device or "cpu"}


def open_torch_for_timing(artifact: str, weights: str | None, device: str, precision: str,
                           channels_last: bool) -> tuple[Runner, str | None]:
    """A TorchRunner; without weights of its own, the variant runs on random ones.

    Speed does not depend on the weights' values, and the full model ships no weights, so timing
    must not require the authors' 176 MB checkpoint. The result says so.
    """
    from ..engines.pytorch import TorchRunner
    from ..model.network import U2Net
    from ..model.weights import LoadedWeights

    variant = _TORCH_VARIANTS.get(artifact)
    if variant is None:
        raise U2Error(f"{artifact}: expected torch:full or torch:small")
    if weights is not None or default_weights(variant) is not None:
        return TorchRunner.open(artifact, weights=weights, device=device, precision=precision,
                                channels_last=channels_last), None
    log.info("%s: no weights given and none embedded; timing random weights (speed does not depend "
             "on their values)", artifact)
    loaded = LoadedWeights(net=U2Net(variant).eval(), info=official_for(variant), path=None, sha256=None)
    return TorchRunner(loaded, device, precision, "fused", channels_last), "random init (timing only)"


def open_for_timing(artifact: str, opts: LatencyOptions) -> tuple[Runner, dict[str, Any]]:
    """The runner and what the result should say about how it was opened."""
    backend, backend_options = _resolve_backend(artifact, opts.backend, opts.device)
    threads = opts.threads or default_threads()
    notes: dict[str, Any] = {"backend": backend}
    if backend == "torch":
        precision = opts.precision or "fp32"
        runner, weights_note = open_torch_for_timing(artifact, opts.weights, backend_options["device"],
                                                      precision, opts.channels_last)
        notes["weights"] = weights_note or runner.info.spec.weights
        if opts.cuda_graphs and runner.info.device != "cuda":
            runner.close()
            raise U2Error("--cuda-graphs needs --device cuda")
        if opts.compile:  # once per runner: every batch size then reuses (or recompiles) this module
            runner.model = torch.compile(runner.model)  # type: ignore[attr-defined]
        return runner, notes
    if opts.channels_last or opts.cuda_graphs or opts.compile:
        raise U2Error(f"{artifact}: --channels-last, --cuda-graphs and --compile apply to PyTorch only")
    if backend in ("onnxruntime", "openvino"):
        backend_options = {**backend_options, "threads": threads}
    runner = open_runner(artifact, **backend_options)
    if opts.precision is not None and opts.precision != runner.info.precision:
        runner.close()
        raise U2Error(f"{artifact} is {runner.info.precision}; --precision {opts.precision} does not apply "
                      f"(the precision of an exported artifact is fixed when it is built)")
    if backend_options.get("device") == "tensorrt":
        notes["execution_provider"] = "TensorrtExecutionProvider"
    elif backend == "onnxruntime":
        notes["execution_provider"] = ("CUDAExecutionProvider" if backend_options["device"] == "cuda"
                                       else "CPUExecutionProvider")
    notes["weights"] = runner.info.spec.weights
    return runner, notes


def resolve_size(runner: Runner, requested: tuple[int, int] | None) -> tuple[int, int]:
    """The artifact's fixed size, else ``--size``, else the weights' native size, else 320."""
    fixed = runner.info.input_size
    if fixed is not None:
        if requested is not None and tuple(requested) != tuple(fixed):
            raise U2Error(f"{runner.info.path} takes {fixed[0]}x{fixed[1]} only; --size "
                          f"{requested[0]}x{requested[1]} does not apply")
        return tuple(fixed)  # type: ignore[return-value]
    if requested is not None:
        return tuple(requested)  # type: ignore[return-value]
    return runner.info.native_size or (DEFAULT_SIZE, DEFAULT_SIZE)


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


# ----------------------------------------------------------------------------------- what is timed

@dataclass
class Step:
    """One timed call, what it covers, and (on GPUs) a device clock for it."""

    call: Callable[[], object]
    covers: str
    device_timer: DeviceTimer | None = None
    stages: dict[str, list[float]] = field(default_factory=dict)  # end-to-end breakdown, ms per call


def _is_torch_runner(runner: Runner) -> bool:
    from ..engines.pytorch import TorchRunner

    return isinstance(runner, TorchRunner)


def _torch_cuda_graph(runner: Any, x: torch.Tensor) -> Callable[[], object]:
    """Capture one forward pass; replaying it removes the per-kernel launch cost."""
    runner.model.requires_grad_(False)  # autocast must not cache casted weights inside a capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            runner.forward(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        runner.forward(x)
    return graph.replay


def model_step(runner: Runner, batch: np.ndarray, opts: LatencyOptions) -> Step:
    """Model inference only: device tensors in and out for PyTorch, else the runner's own binding."""
    device_timer = runner.device_timer() if hasattr(runner, "device_timer") else None
    if _is_torch_runner(runner):
        x = torch.from_numpy(batch).to(runner.device)  # type: ignore[attr-defined]
        on_cuda = runner.device.type == "cuda"  # type: ignore[attr-defined]
        if opts.cuda_graphs:
            call = _torch_cuda_graph(runner, x)
            covers = "CUDA graph replay of forward() on a device tensor"
        else:
            call = lambda: runner.forward(x)  # type: ignore[attr-defined]  # noqa: E731
            covers = "forward() on a device tensor (no host↔device copies)"
        return Step(call, covers, TorchCudaEvents() if on_cuda else device_timer)
    if opts.cuda_graphs or opts.compile:
        raise U2Error("--cuda-graphs and --compile apply to PyTorch only")
    bind = getattr(runner, "bind", None)
    if callable(bind):  # a runner that can stage the input on its device once
        return Step(bind(batch), "bound inference (input staged on the device once)", device_timer)
    covers = "infer(): host array in, host arrays out"
    if runner.info.device == "cuda":
        covers += " (includes host↔device copies)"
    return Step(lambda: runner.infer(batch), covers, device_timer)


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


# ------------------------------------------------------------------------------------------- the loop

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


@contextlib.contextmanager
def _torch_settings(threads: int, tf32: bool | None) -> Iterator[bool | None]:
    """Set torch's thread count and cuDNN TF32 for one sweep, and put them back after."""
    old_threads = torch.get_num_threads()
    old_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_num_threads(threads)
    if tf32 is not None:
        torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield torch.backends.cudnn.allow_tf32
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.allow_tf32 = old_tf32


def _device_memory(runner: Runner, is_torch: bool) -> dict[str, Any]:
    if runner.info.device != "cuda":
        return {}
    if is_torch:
        return {"device_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "device_method": "torch.cuda.max_memory_allocated"}
    report = getattr(runner, "device_memory_bytes", None)
    if callable(report):
        return {"device_peak_mib": round(report() / 2**20, 1), "device_method": "runner.device_memory_bytes"}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return {"device_used_mib": round((total - free) / 2**20, 1),
                "device_method": "cudaMemGetInfo after the run (whole device, all processes)"}
    return {}


def _variant_of(runner: Runner, artifact: str) -> str | None:
    return _TORCH_VARIANTS.get(artifact) or runner.info.spec.variant


def result_header(runner: Runner, artifact: str, notes: dict[str, Any], batch_size: int, size: tuple[int, int],
                  mode: str, step: Step) -> dict[str, Any]:
    """What was timed: the first fields of every latency result, sequential or paired."""
    return {"model": artifact, "variant": _variant_of(runner, artifact), **notes, "device": runner.info.device,
            "precision": runner.info.precision, "batch": batch_size, "size": list(size), "mode": mode,
            "timed": step.covers}


def measure_runner(runner: Runner, artifact: str, notes: dict[str, Any], opts: LatencyOptions,
                   batch_size: int, size: tuple[int, int], tf32: bool | None) -> dict[str, Any]:
    """One result: ``batch_size`` images at ``size`` through an open runner."""
    is_torch = _is_torch_runner(runner)
    if opts.end_to_end:
        step = end_to_end_step(runner, batch_size, size, find_images(opts.images))
    else:
        rng = np.random.default_rng(0)
        batch = rng.standard_normal((batch_size, 3, *size), dtype=np.float32)
        step = model_step(runner, batch, opts)
    if is_torch and runner.info.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakHostMemory() as memory:
        samples = time_step(step, runner.synchronize, opts.warmup_s, opts.min_time_s, opts.min_iters)
    host = Stats.of(samples.host_ms)
    device = Stats.of(samples.device_ms) if samples.device_ms else None
    on_cuda = runner.info.device == "cuda"
    return {
        **result_header(runner, artifact, notes, batch_size, size, "end-to-end" if opts.end_to_end else "model",
                        step),
        "options": {"channels_last": opts.channels_last, "cuda_graphs": opts.cuda_graphs,
                    "compile": opts.compile, "tf32": tf32 if on_cuda and is_torch else None,
                    "tf32_applies": hardware.tf32_capable() if on_cuda else False},
        "iterations": host.n,
        "warmup_iterations": samples.warmup_iters,
        "duration_s": round(samples.duration_s, 3),
        "latency_ms": host.as_dict(),  # host latency: call to result ready
        "device_ms": device.as_dict() if device else None,  # GPU compute time from CUDA events
        "cpu_time_ms": Stats.of(samples.cpu_ms).as_dict(),  # process CPU time per call, all threads
        "throughput_ips": batch_size * host.n / samples.duration_s,
        "fps": 1e3 / host.mean,  # batches completed per second, one at a time (= images/s at batch 1)
        "stages_ms": {k: sum(v) / len(v) for k, v in step.stages.items() if v} or None,
        "memory": {**memory.as_dict(), **_device_memory(runner, is_torch)},
        "hardware": hardware.describe(opts.threads or default_threads()),
    }


def run_latency(artifacts: Sequence[str], opts: LatencyOptions) -> list[dict[str, Any]]:
    """Measure every artifact at every batch size; results in order (artifact, then batch)."""
    threads = opts.threads or default_threads()
    results: list[dict[str, Any]] = []
    with _torch_settings(threads, opts.tf32) as tf32:
        for artifact in artifacts:
            runner, notes = open_for_timing(artifact, opts)
            with runner:
                size = resolve_size(runner, opts.size)
                for batch_size in usable_batches(runner, opts.batches):
                    log.info("timing %s, batch %d, %dx%d ...", artifact, batch_size, *size)
                    results.append(measure_runner(runner, artifact, notes, opts, batch_size, size, tf32))
    return results
