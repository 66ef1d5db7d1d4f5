"""``u2bench benchmark``: build every artifact this machine can run, gate each on parity with PyTorch,
time them all in one paired run, and name the one to ship.

Every step is the library function the single-purpose command runs, never a second code path; each is
one module, readable without the others:

1. :mod:`.targets`: the ``FORMAT:PRECISION`` names asked for, and why one cannot run here (its row then
   says ``skipped: <reason>``). PyTorch FP32 (the reference) and ONNX FP32 (the baseline of every ratio
   and the source of every other artifact) are always in.
2. :mod:`.build`: each artifact built into ``--out`` by its ``u2export`` stage, or reused (:mod:`.cache`);
   INT8 stages calibrate on :mod:`.calibration`'s images, never the gate's. ``--out`` holds only what the
   benchmark wrote there (:mod:`.outdir`'s ledger): a run refuses, before any work, an OUT with anything else
   in it, so no stage ever replaces or deletes a file of the user's.
3. :mod:`.gate`: ``u2bench parity`` of each artifact against PyTorch FP32 on ``--data``.
4. :mod:`.timing`: all of them and PyTorch eager in one paired run, model only, then end to end.
5. :mod:`.rss`: peak RSS of each artifact in a fresh process of its own.
6. :mod:`.rows`: the recommendation, the passing artifact with the lowest model-only batch-1 p50; the
   table, ship line and Markdown report are :mod:`.report`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ... import hardware
from ...errors import U2Error
from ..latency import default_threads
from . import rss
from .build import BuildContext, build_rows, weights_of
from .calibration import calibration_digests, calibration_folder, warn_overlap
from .gate import gate_rows
from .options import BenchmarkOptions, step_commands
from .outdir import OutFolder
from .report import check_report, render_text, report_paths, ship_line, write_report
from .result import BenchmarkResult
from .rows import ROW_KEYS, Row, plan_rows, recommend
from .targets import BASELINE, parse_formats
from .timing import time_rows

__all__ = ["ROW_KEYS", "BenchmarkOptions", "BenchmarkResult", "Row", "check_report", "parse_formats", "recommend",
           "render_text", "run_benchmark", "ship_line", "write_report"]

log = logging.getLogger(__name__)

DEFAULT_OUT = "benchmark-artifacts"


def run_benchmark(opts: BenchmarkOptions, json_out: Path | None = None, report: Path | None = None) -> BenchmarkResult:
    """Resolve, build, gate, time, measure, recommend (the module docstring's steps)."""
    from ...data.datasets import open_dataset
    from ...engines import open_runner

    started = time.perf_counter()
    _check(opts)
    targets = parse_formats(opts.formats)
    beside = json_out or report
    out = Path(opts.out) if opts.out is not None else beside.parent / DEFAULT_OUT if beside else Path(DEFAULT_OUT)
    from ...calibration import DEFAULT_CALIB_DIR

    folder = OutFolder.open(out, user_outputs=[json_out, report, *(report_paths(report) if report else ())],
                            inputs=[("--data", opts.data), ("--calib", opts.calib or DEFAULT_CALIB_DIR),
                                    ("--weights", opts.weights)])
    dataset = open_dataset(opts.data, subset=opts.subset, limit=opts.limit)
    if not dataset.pairs:
        raise U2Error(f"{opts.data}: no image/mask pairs to gate on")
    weights_sha, weights_path = weights_of(opts.variant, opts.weights)
    calib_dir = calibration_folder(opts.calib, opts.calib_subset, folder)
    warn_overlap(calib_dir, dataset)
    hw = hardware.describe(opts.threads or default_threads())
    rows = plan_rows(targets, opts.variant, opts.device, calib_dir, weights_path)
    say = _say if opts.progress else (lambda msg: log.info("%s", msg))
    seconds: dict[str, float] = {}

    with open_runner(f"torch:{opts.variant}", weights=str(opts.weights) if opts.weights else None) as reference:
        size: tuple[int, int] = tuple(opts.size or reference.info.native_size or (320, 320))  # type: ignore[assignment]
        usable_calib = calib_dir if calib_dir.is_dir() else None
        ctx = BuildContext(out, opts.variant, opts.weights, weights_sha, size, usable_calib,
                           *calibration_digests(usable_calib, opts.calib_num, opts.seed), opts.calib_num, opts.seed)
        with _stage(seconds, "build"):
            build_rows(rows, ctx, folder, say, opts.progress)
        with _stage(seconds, "parity"):
            gated = gate_rows(reference, rows, dataset, size, opts)

    baseline = next(r for r in rows if r.target_key == BASELINE)
    ref = next(r for r in rows if r.reference)
    timed = [baseline, *[r for r in rows if r.artifact and not r.skipped and r not in (baseline, ref)], ref]
    images = Path(dataset.images_dir) if opts.end_to_end and dataset.images_dir is not None else None
    timing, timing_seconds = time_rows(timed, opts, size, images)
    seconds.update(timing_seconds)
    notes = list(gated.notes)
    if opts.rss:
        with _stage(seconds, "peak_rss"):
            notes += rss.measure_rows(timed, opts, size, images)
        timing["peak_rss"] = rss.method(images)
    folder.record()  # whatever a runner left in OUT while gating and timing is the benchmark's too
    seconds["total"] = time.perf_counter() - started
    return BenchmarkResult(rows, recommend(rows), baseline, hw, dataset.name, gated.n_images, size, out,
                           opts.command(json_out, report), seconds, timing, gated.curves,
                           step_commands(opts, rows, size, images), notes)


def _check(opts: BenchmarkOptions) -> None:
    """Options that would fail late, refused before any work."""
    if opts.device not in ("cpu", "cuda"):
        raise U2Error(f"--device {opts.device}: expected cpu or cuda")
    if opts.device == "cuda" and hardware.gpu() is None:
        raise U2Error("--device cuda: PyTorch sees no CUDA GPU here")
    if opts.min_time_s < 0 or opts.warmup_s < 0:
        raise U2Error("--min-time-s and --warmup-s must not be negative")


@contextlib.contextmanager
def _stage(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Record the wall time of one step under ``key`` (the JSON's ``seconds``)."""
    t0 = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - t0


def _say(msg: str) -> None:
    tqdm.write(f"u2bench: {msg}", file=sys.stderr)

