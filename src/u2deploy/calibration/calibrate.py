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


def _chunks(calib: CalibrationSet, batch: int, images_per_chunk: int) -> Iterator[list[np.ndarray]]:
    chunk: list[np.ndarray] = []
    for x in calib.batches(batch):
        chunk.append(x)
        if len(chunk) * batch >= images_per_chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def calibrate(model_path: Path, calib: CalibrationSet, method: str, batch: int = 1,
              progress: bool = True) -> tuple[Ranges, CalibrationStats]:
    """(lowest, highest) of every float tensor of the model over the calibration images."""
    from onnxruntime.quantization.calibrate import create_calibrator
    from tqdm import tqdm

    options = method_options(method)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="u2calib.") as tmp:
        augmented = str(Path(tmp) / "augmented.onnx")
        calibrator = create_calibrator(model_path, None, augmented_model_path=augmented,
                                       calibrate_method=ort_method(method), extra_options=options)
        bar = tqdm(total=len(calib.files), desc=f"calibrating ({method})", unit="img", disable=not progress,
                   leave=False)
        with bar:
            for chunk in _chunks(calib, batch, CHUNK_IMAGES if method != "minmax" else batch):
                with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram collector prints per call
                    calibrator.collect_data(_reader(chunk, calib.spec.input_name))
                bar.update(sum(len(x) for x in chunk))
                bar.set_postfix(skipped=len(calib.skipped), refresh=False)
        with contextlib.redirect_stdout(io.StringIO()):
            tensors = calibrator.compute_data()
        del calibrator
    ranges: Ranges = {}
    for name, data in tensors.items():
        lo, hi = data.range_value if hasattr(data, "range_value") else data
        ranges[name] = (float(np.min(lo)), float(np.max(hi)))
    used = len(calib.files) - len(calib.skipped)
    return ranges, CalibrationStats(time.perf_counter() - started, used, len(calib.skipped), peak_rss_bytes())


def to_tensors_data(ranges: Ranges, method: str):
    """ONNX Runtime's form of the ranges, for its quantizer."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    return TensorsData(ort_method(method), {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                                    for name, (lo, hi) in ranges.items()})
