"""Activation ranges from the calibration set, streamed in chunks so memory stays flat.

ONNX Runtime's histogram calibrators (entropy, percentile) keep every intermediate tensor of every
image until ``collect_data`` returns: 300 images of the full U²-Net at 320×320 would need tens of
GB. Feeding ``collect_data`` a few images at a time keeps only one chunk's tensors alive (the
histograms merge across calls); min-max reduces each tensor to two numbers inside the graph and
merges as it goes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import U2Error
from .cache import Ranges
from .dataset import CalibrationSet

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
CHUNK_IMAGES = 2  # intermediate tensors held at once: one chunk's (full model at 320²: ~0.7 GB per image)


def method_options(method: str) -> dict[str, object]:
    """The calibrator's settings: recorded in the cache key, since they decide the ranges."""
    if method == "minmax":
        return {"symmetric": False}
    if method == "entropy":
        return {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128}
    if method == "percentile":
        return {"symmetric": True, "num_bins": 2048, "percentile": 99.999}
    raise U2Error(f"--method {method}: expected one of {', '.join(METHODS)}")


def ort_method(method: str):
    """ONNX Runtime's CalibrationMethod for ``method``."""
    from onnxruntime.quantization import CalibrationMethod

    method_options(method)  # one-line error for an unknown name
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


@dataclass
class CalibrationStats:
    seconds: float
    images: int
    skipped: int
    peak_rss_bytes: int  # of this process, since it started


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _reader(batches: list[np.ndarray], input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class ChunkReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {input_name: batch}

    return ChunkReader()


class CalibrationInterrupted(KeyboardInterrupt):
    """Ctrl-C while calibrating: the min-max ranges of the first ``files_done`` files (None: nothing kept)."""

    def __init__(self, files_done: int, ranges: Ranges | None) -> None:
        super().__init__(files_done)
        self.files_done, self.ranges = files_done, ranges


def _chunks(calib: CalibrationSet, batch: int, images_per_chunk: int, start: int) -> Iterator[list[np.ndarray]]:
    chunk: list[np.ndarray] = []
    for x in calib.batches(batch, start=start):
        chunk.append(x)
        if len(chunk) * batch >= images_per_chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _as_ranges(tensors) -> Ranges:
    ranges: Ranges = {}
    for name, data in tensors.items():
        lo, hi = data.range_value if hasattr(data, "range_value") else data
        ranges[name] = (float(np.min(lo)), float(np.max(hi)))
    return ranges


def merge(a: Ranges, b: Ranges) -> Ranges:
    """The ranges of two image sets together (min-max ranges merge exactly; histograms do not)."""
    return {name: (min(a[name][0], b[name][0]), max(a[name][1], b[name][1])) if name in a and name in b
            else a.get(name) or b[name] for name in a.keys() | b.keys()}


def calibrate(model_path: Path, calib: CalibrationSet, method: str, batch: int = 1,
              progress: bool = True, resume: tuple[int, Ranges] | None = None) -> tuple[Ranges, CalibrationStats]:
    """(lowest, highest) of every float tensor of the model over the calibration images.

    ``resume`` (min-max only): the ranges of the first files from an interrupted run, which are not
    read again. Ctrl-C raises :class:`CalibrationInterrupted` with what min-max can keep.
    """
    if resume is not None and method != "minmax":
        resume = None  # histograms cannot be rebuilt from ranges: start over
    start, kept = resume if resume is not None else (0, None)
    from onnxruntime.quantization.calibrate import create_calibrator
    from tqdm import tqdm

    options = method_options(method)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="u2calib.") as tmp:
        augmented = str(Path(tmp) / "augmented.onnx")
        calibrator = create_calibrator(model_path, None, augmented_model_path=augmented,
                                       calibrate_method=ort_method(method), extra_options=options)
        bar = tqdm(total=len(calib.files), initial=start, desc=f"calibrating ({method})", unit="img",
                   disable=not progress, leave=False)
        done = start
        try:
            with bar:
                for chunk in _chunks(calib, batch, CHUNK_IMAGES if method != "minmax" else batch, start):
                    with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram collector prints per call
                        calibrator.collect_data(_reader(chunk, calib.spec.input_name))
                    done = calib.consumed
                    bar.update(sum(len(x) for x in chunk))
                    bar.set_postfix(skipped=len(calib.skipped), refresh=False)
        except KeyboardInterrupt:
            raise CalibrationInterrupted(done, _kept(calibrator, kept, method, done > start)) from None
        if kept is not None and len(calib.skipped) == calib.consumed - start:
            ranges = kept  # nothing left to read (interrupted after the last image, or the rest unreadable)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                ranges = _as_ranges(calibrator.compute_data())
            if kept is not None:
                ranges = merge(ranges, kept)
        del calibrator
    used = len(calib.files) - len(calib.skipped)
    return ranges, CalibrationStats(time.perf_counter() - started, used, len(calib.skipped), peak_rss_bytes())


def _kept(calibrator, kept: Ranges | None, method: str, collected: bool) -> Ranges | None:
    """What an interrupted min-max run can keep: its ranges so far (a superset of the counted files'
    is harmless, since merging ranges is idempotent), with those it resumed from."""
    if method != "minmax":
        return None
    if not collected:
        return kept
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ranges = _as_ranges(calibrator.compute_data())
    except Exception:  # interrupted mid-update: keep only what was already safe
        return kept
    return merge(ranges, kept) if kept is not None else ranges


def to_tensors_data(ranges: Ranges, method: str):
    """ONNX Runtime's form of the ranges, for its quantizer."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    return TensorsData(ort_method(method), {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                                    for name, (lo, hi) in ranges.items()})
