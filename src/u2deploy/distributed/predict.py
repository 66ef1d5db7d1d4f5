"""``u2bench predict --ray``: the folder job on a Ray cluster, through Ray Data.

The driver (this process) lists the images and checks the output plan as local predict does
(:func:`u2deploy.bench.predict.plan_outputs`: nothing runs before it passes), opens the artifact once
to read its input size (here, or on a GPU node with ``--device cuda``: the driver may have no GPU),
then streams the job through three Ray Data stages, over blocks of 8 images:

1. decode + preprocess, in a pool of actors that hold no CPU (``num_cpus=0``);
2. the network, in an autoscaling pool of actors (``ActorPoolStrategy(min_size=1, max_size=N,
   initial_size=N)``), each holding ``cpus_per_actor`` CPUs (and one GPU on CUDA) and opening the
   runner once; an actor with K CPUs runs local predict's split
   (:func:`~u2deploy.bench.predict.inference_split`). ``min_size=1``: a pool of fixed size would
   wait for a CPU that died with its node; this one carries on with the survivors;
3. postprocess + write, in a pool of actors that hold no CPU, each file through ``atomic_path``.

Read and write hold no CPU because the inference actors hold them all: a CPU-holding read on a
1-CPU node is never scheduled, and Ray Data waits, silently, 30 minutes by default. They are actors
rather than tasks: a CPU-free task runs in a pooled worker process, which Ray ends after a second
idle once its node has as many workers as CPUs (``idle_worker_killing_time_threshold_ms``,
``num_workers_soft_limit``; the inference actors see to that), so blocks kept paying for fresh
Python workers: on 120 images, 20 worker starts and 1.8× the CPU time of actors (docs/ray.md).

The per-image work is local predict's own (:class:`~u2deploy.bench.predict.Processing`): same
preprocessing, same per-call batch, same postprocessing and PNG settings, so the masks are the
same bytes. A bad image becomes a row naming it (the read and write stages catch a file's U2Error;
Ray's own ``max_errored_blocks`` would drop the good images of its block with it); a write that
fails stops the job, as it stops local predict. Ray re-runs the tasks of
a node that dies, so a file can be written twice: every write is atomic (temporary + rename) and
writes the same bytes, and the temporaries a killed worker left behind are removed at the end.

The artifact reaches the actors by path, not through the object store: the images and the outputs
already need a filesystem every node sees, every format opens from its path (a multi-file OpenVINO
IR, a TensorRT engine with its manifest), and each node's page cache shares it among its actors.
Each actor checks the file's SHA-256 and the u2deploy version against the driver's before it
opens it, so a node with another copy or another release fails with one line instead of writing
different masks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..bench.predict import (
    DEFAULT_BATCH,
    OutputPlan,
    PredictInterrupted,
    PredictReport,
    Processing,
    _make_folders,
    _remove_empty,
    inference_split,
    input_geometry,
    normalisation,
    run_batched,
)
from ..data import preprocess
from ..data.images import read_image
from ..engines import Runner, open_runner
from ..errors import U2Error
from ..files import remove_temporaries, sha256_of
from ..formats import backend_for
from ..plural import plural

IMAGES_PER_BLOCK = 8  # the unit Ray schedules and re-runs: small enough to spread and to lose little
RAY_EXTRA = "pip install -e '.[ray]'"


def import_ray() -> Any:
    """Ray and Ray Data, or one line saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise U2Error(f"--ray needs Ray Data: {RAY_EXTRA} (on the driver and every node)") from None
    return ray


@dataclass(frozen=True)
class Artifact:
    """What every node opens: the artifact as the driver saw it (its digest and u2deploy's version)."""

    model: str
    backend: str
    device: str
    weights: str | None
    digest: str | None  # SHA-256 of the artifact file (and of --weights), None for torch:* without weights
    version: str

    @classmethod
    def of(cls, model: str, backend: str, device: str, weights: str | None) -> Artifact:
        files = [f for f in (model, weights) if f is not None and Path(f).is_file()]
        if not files and not model.startswith("torch:"):
            raise U2Error(f"{model}: no such file")
        digest = "+".join(sha256_of(f) for f in files) or None
        return cls(model, backend, device, weights, digest, __version__)

    def open(self, threads: int | None) -> Runner:
        """The runner, on a node: refuses another u2deploy release or another copy of the file."""
        if __version__ != self.version:
            raise U2Error(f"this node has u2deploy {__version__}, the driver {self.version}: "
                          "install the same version on every node")
        files = [f for f in (self.model, self.weights) if f is not None and Path(f).is_file()]
        if self.digest is not None and "+".join(sha256_of(f) for f in files) != self.digest:
            raise U2Error(f"{self.model}: this node's copy differs from the driver's (SHA-256); "
                          "every node must see the same artifact")
        return open_runner(self.model, self.backend, weights=self.weights, device=self.device, threads=threads)


@dataclass(frozen=True)
class Geometry:
    """What the driver needs from the artifact to plan the stages (read here, or on a GPU node)."""

    processing: Processing
    fixed_batch: int | None
    describe: str


def _probe(artifact: Artifact, size: tuple[int, int] | None, mode: str, threshold: float | None,
           background: tuple[int, int, int] | None) -> Geometry:
    with artifact.open(threads=1) as runner:
        in_size, fixed_batch = input_geometry(runner, size)
        mean, std = normalisation(runner)
        return Geometry(Processing(in_size, mode, mean, std, threshold, background), fixed_batch,
                        f"{runner.describe()} on {runner.info.device}")


# ------------------------------------------------------------------------------------ the stages
class _Load:
    """Decode and preprocess a block of images; an unreadable one gets an error and a zero input."""

    def __init__(self, processing: Processing) -> None:
        self.processing = processing

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h, w = self.processing.size
        xs = np.zeros((len(batch["path"]), 3, h, w), np.float32)
        hws = np.zeros((len(xs), 2), np.int64)
        errors = []
        for k, path in enumerate(batch["path"]):
            try:
                x, hw = self.processing.load(Path(path), keep_image=False)
                xs[k], hws[k] = x, hw
                errors.append("")
            except U2Error as exc:
                errors.append(str(exc))
        return {**batch, "x": xs, "hw": hws, "error": np.array(errors, dtype=object)}


class _Infer:
    """One actor: the runner opened once, run on every block as local predict runs it."""

    def __init__(self, artifact: Artifact, cpus: int, streams: int | None, batch: int | None,
                 fixed_batch: int | None, mode: str) -> None:
        n_streams, per_stream = inference_split(artifact.model, artifact.device, threads=cpus, streams=streams,
                                                backend=artifact.backend)
        self.runner = artifact.open(threads=per_stream)
        self.fixed_batch = fixed_batch
        self.step = fixed_batch or (1 if mode == "reference" else call_batch(batch, n_streams, artifact))
        self.pool = ThreadPoolExecutor(n_streams) if n_streams > 1 else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = batch.pop("x")
        ok = np.flatnonzero(batch["error"] == "")
        chunks = [ok[i:i + self.step] for i in range(0, len(ok), self.step)]
        preds = np.zeros((len(x), *x.shape[-2:]), np.float32)

        def infer(rows: np.ndarray) -> np.ndarray:
            return run_batched(self.runner, x[rows], self.fixed_batch, self.step)

        for rows, maps in zip(chunks, self.pool.map(infer, chunks) if self.pool else map(infer, chunks)):
            preds[rows] = maps.reshape(len(rows), *maps.shape[-2:])
        return {**batch, "pred": preds}


def call_batch(batch: int | None, streams: int, artifact: Artifact) -> int:
    """Images per call: as given, else local predict's default on this runner (1 for ONNX Runtime on
    the CPU, whose concurrent single-image calls beat batches; else 8), so the maps are the same."""
    if batch:
        return batch
    concurrent = artifact.device == "cpu" and backend_for(artifact.model, artifact.backend).name == "onnxruntime"
    return 1 if concurrent or streams > 1 else DEFAULT_BATCH


class _Write:
    """Postprocess and write a block; each row says what it wrote, or why not (``fatal``: a write failed)."""

    def __init__(self, processing: Processing) -> None:
        self.processing = processing

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written, errors, fatal = [], [], []
        for k, path in enumerate(batch["path"]):
            done: list[str] = []
            error, stop = str(batch["error"][k]), False
            if not error:
                targets = [Path(t) for t in batch["targets"][k]]
                cutouts = {t for t, c in zip(targets, batch["is_cutout"][k]) if c}
                try:
                    kept = read_image(path) if cutouts else tuple(int(v) for v in batch["hw"][k])
                    for target in self.processing.write(targets, cutouts, kept, batch["pred"][k]):
                        done.append(str(target))
                except U2Error as exc:
                    error, stop = str(exc), True
            written.append(done)
            errors.append(error)
            fatal.append(stop)
        return {"i": batch["i"], "written": _objects(written), "error": np.array(errors, dtype=object),
                "fatal": np.array(fatal)}


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object column (np.array would make a list of equal-length lists 2-D)."""
    column = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
        column[k] = value
    return column


# ------------------------------------------------------------------------------------ the driver
@dataclass
class RayOptions:
    """``--ray ADDRESS|auto|local``, ``--ray-actors``, ``--ray-cpus-per-actor``."""

    address: str
    actors: int | None = None  # default: the cluster's CPUs (GPUs on CUDA) over cpus_per_actor
    cpus_per_actor: int = 1


def connect(address: str) -> Any:
    """``ray.init`` for ``--ray``: ``local`` starts Ray on this machine, bound to 127.0.0.1 only."""
    ray = import_ray()
    # Ray's C++ log lines (its IP probe, notes on actor restarts) would garble the bar; the job's outcome is
    # reported here, and RAY_BACKEND_LOG_LEVEL=info brings them back.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    try:
        if address == "local":
            return ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
        return ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise U2Error(f"--ray {address}: cannot connect to a Ray cluster ({first[:200]})") from None


def _quiet_data(ray: Any) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's own bar (tqdm) says what matters
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def predict_on_ray(plan: OutputPlan, options: RayOptions, *, model: str, backend: str = "auto",
                   device: str = "cpu", weights: str | None = None, mode: str = "fast",
                   size: tuple[int, int] | None = None, batch: int | None = None, streams: int | None = None,
                   threshold: float | None = None, background: tuple[int, int, int] | None = None,
                   progress: bool = True, on_error: Callable[[str], None] | None = None,
                   on_start: Callable[[str], None] | None = None) -> PredictReport:
    """Run ``plan`` on the cluster ``options.address``; the same report (and exceptions) as local predict.

    ``on_start`` gets one line saying where the job runs, once the cluster is reached.
    Ctrl-C raises :class:`~u2deploy.bench.predict.PredictInterrupted`; a failed write stops the job
    with a U2Error (the masks written before it are kept).
    """
    if mode not in preprocess.MODES:
        raise U2Error(f"--preprocess {mode}: expected one of {', '.join(preprocess.MODES)}")
    if options.cpus_per_actor < 1 or (options.actors is not None and options.actors < 1):
        raise U2Error("--ray-actors and --ray-cpus-per-actor: at least 1")
    inference_split(model, device, threads=options.cpus_per_actor, streams=streams, backend=backend)  # --streams
    artifact = Artifact.of(model, backend, device, weights)
    report = PredictReport(skipped=list(plan.skipped))
    if not plan.jobs:
        return report
    ray = import_ray()
    # Ray prints its notices (a node lost, its tasks re-run) on stdout: they go to stderr with the bar, so that
    # stdout holds the summary alone. Ray Data's hint that a small job has fewer blocks than tasks is dropped.
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)
        connect(options.address)
        try:
            return _run(ray, plan, options, artifact, report, size=size, mode=mode, batch=batch, streams=streams,
                        threshold=threshold, background=background, progress=progress, on_error=on_error,
                        on_start=on_start)
        finally:
            ray.shutdown()


def _run(ray: Any, plan: OutputPlan, options: RayOptions, artifact: Artifact, report: PredictReport, *,
         size: tuple[int, int] | None, mode: str, batch: int | None, streams: int | None, threshold: float | None,
         background: tuple[int, int, int] | None, progress: bool, on_error: Callable[[str], None] | None,
         on_start: Callable[[str], None] | None) -> PredictReport:
    gpus = 1 if artifact.device != "cpu" else 0
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    have = resources.get("GPU" if gpus else "CPU", 0)
    actors = options.actors or max(1, int(have // (gpus or options.cpus_per_actor)))
    if gpus:  # the driver may have no GPU: open the artifact where the actors will run
        probe = ray.remote(num_cpus=options.cpus_per_actor, num_gpus=gpus, max_retries=3)(_probe)
        try:
            geometry: Geometry = ray.get(probe.remote(artifact, size, mode, threshold, background))
        except ray.exceptions.RayTaskError as exc:
            raise _one_line(exc) from None
    else:  # here: a worker process on a node would add seconds to every job
        geometry = _probe(artifact, size, mode, threshold, background)
    if on_start:
        on_start(f"Ray: {plural(nodes, 'node')}, {resources.get('CPU', 0):g} CPUs{f', {have:g} GPUs' if gpus else ''}; "
                 f"up to {plural(actors, 'actor')} × {plural(options.cpus_per_actor, 'CPU')}"
                 f"{' + 1 GPU' if gpus else ''}, "
                 f"{geometry.describe}")
    _quiet_data(ray)
    items = [{"i": k, "path": str(path), "targets": [str(t) for t in targets],
              "is_cutout": [t in plan.cutout_targets for t in targets]} for k, (path, targets) in enumerate(plan.jobs)]
    cpu_free = {"processing": geometry.processing}
    ds = (ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / IMAGES_PER_BLOCK))
          .map_batches(_Load, fn_constructor_kwargs=cpu_free, batch_size=None, batch_format="numpy", num_cpus=0,
                       compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors))
          .map_batches(_Infer, fn_constructor_kwargs={
                           "artifact": artifact, "cpus": options.cpus_per_actor, "streams": streams, "batch": batch,
                           "fixed_batch": geometry.fixed_batch, "mode": mode},
                       batch_size=IMAGES_PER_BLOCK, batch_format="numpy", num_cpus=options.cpus_per_actor,
                       num_gpus=gpus, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors,
                                                                         initial_size=actors))
          .map_batches(_Write, fn_constructor_kwargs=cpu_free, batch_size=None, batch_format="numpy", num_cpus=0,
                       compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors)))
    created = _make_folders(plan)
    finals = [t for _, targets in plan.jobs for t in targets]
    bar = tqdm(total=len(plan.jobs), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    seen: set[int] = set()
    started, started_wall = time.perf_counter(), time.time()
    stopped: BaseException | None = None  # Ctrl-C, or a write that failed
    try:
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, written, error, fatal in zip(block["i"], block["written"], block["error"], block["fatal"]):
                if int(i) in seen:
                    continue  # a re-run task's row delivered twice: its files are the same bytes
                seen.add(int(i))
                for target in written:
                    report.record(Path(target), plan.cutout_targets)
                if fatal:
                    raise U2Error(error)
                if error:
                    report.failed.append((plan.jobs[int(i)][0], str(error)))
                    if on_error:
                        on_error(str(error))
                bar.update(1)
    except (KeyboardInterrupt, U2Error) as exc:
        stopped = exc
    except ray.exceptions.RayError as exc:
        raise _one_line(exc) from None
    finally:
        report.seconds = time.perf_counter() - started
        bar.close()
        ray.shutdown()  # the job's workers end first: none is left writing while the leftovers go
        remove_temporaries(finals)
        _remove_empty(created)
    if isinstance(stopped, KeyboardInterrupt):
        _count_finished(report, finals, plan, started_wall)
        raise PredictInterrupted(report)
    if stopped is not None:
        _count_finished(report, finals, plan, started_wall)
        if not report.written:
            raise stopped
        raise U2Error(f"{stopped}; kept the {plural(len(report.written), 'mask')} written before it")
    return report


def _count_finished(report: PredictReport, finals: list[Path], plan: OutputPlan, since: float) -> None:
    """After a stop: the outputs on disk, not only those reported. A task reports its block when the
    block is done, so files of a block cut short are written but not yet counted."""
    counted = set(report.written) | set(report.cutouts)
    for target in finals:
        try:
            fresh = target not in counted and target.stat().st_mtime >= since - 1
        except OSError:
            continue
        if fresh:
            report.record(target, plan.cutout_targets)


def _one_line(exc: BaseException) -> U2Error:
    """A failed Ray task as one line: the U2Error it raised on its node, else the cause's first line."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, U2Error):
        return U2Error(str(cause))
    text = (str(cause).strip().splitlines() or [""])[-1] or type(cause).__name__
    return U2Error(f"the Ray job failed: {type(cause).__name__}: {text[:300]} (the workers' logs: "
                   "/tmp/ray/session_latest/logs on each node)")
