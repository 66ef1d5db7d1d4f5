"""Calibration data for TensorRT's implicit INT8 calibrator (8.6 and 10.x; TensorRT 11 removed it).

The batches are the deployment preprocessing (:func:`u2deploy.data.preprocess.fast`) of a seeded,
reproducible sample of the calibration images, so the scales TensorRT picks see exactly what the
engine will see. The calibrator class itself must subclass ``tensorrt.IInt8EntropyCalibrator2``,
so it is made inside :func:`make_entropy_calibrator`, after TensorRT has been imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import IMAGENET_MEAN, IMAGENET_STD
from ..engines.trt_compat import cuda_check
from ..errors import U2Error
from ..files import atomic_path

log = logging.getLogger(__name__)


def sample_images(calib_dir: Path, count: int | None = None, seed: int = 0) -> list[Path]:
    """``count`` images of ``calib_dir`` drawn with ``seed`` (all when ``count`` is None), in name order.

    The same folder, count and seed give the same files on every machine, so two builds calibrate alike.
    """
    from ..data.images import list_images

    files = list_images(Path(calib_dir))
    if count is not None:
        if count < 1:
            raise U2Error(f"--calib-images must be 1 or more, got {count}")
        if count < len(files):
            picked = np.random.default_rng(seed).choice(len(files), size=count, replace=False)
            files = [files[i] for i in sorted(picked)]
    return files


def calibration_batches(files: Sequence[Path], shape: Sequence[int],
                        mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD) -> Iterator[np.ndarray]:
    """Full N×3×H×W float32 batches of ``files`` (a last partial batch is left out: shapes are fixed)."""
    from ..data.images import read_image
    from ..data.preprocess import fast

    n, _, h, w = shape
    if len(files) < n:
        raise U2Error(f"{len(files)} calibration images are fewer than one batch of {n}; "
                      "add images or lower --calib-batch")
    for start in range(0, len(files) - n + 1, n):
        images = [read_image(p) for p in files[start:start + n]]
        yield fast(images, (h, w), mean, std)


def make_entropy_calibrator(trt: Any, cudart: Any, batches: Callable[[], Iterator[np.ndarray]],
                            shape: Sequence[int], cache: Path | None) -> Any:
    """An ``IInt8EntropyCalibrator2`` that uploads ``batches()`` one by one and keeps a cache file.

    When ``cache`` exists TensorRT reads the scales from it and asks for no batches. Errors inside
    TensorRT's callbacks cannot cross back through it, so they are kept in ``.error`` for the builder.
    """
    nbytes = int(np.prod(shape)) * 4

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 trampolines need the base initialised
            self.error: BaseException | None = None
            self.batches_used = 0
            self.cache_written = False
            self._iter: Iterator[np.ndarray] | None = None
            self._device = 0

        def get_batch_size(self) -> int:
            # Explicit-batch networks (all of ours) carry N in the input shape; a value other than 1
            # here makes TensorRT scale the expected input by it ("Explicit batch network detected
            # and batch size specified"), as Polygraphy's default of 1 also reflects.
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                if self._iter is None:
                    self._iter = batches()
                batch = next(self._iter, None)
                if batch is None:
                    return None
                host = np.ascontiguousarray(batch, dtype=np.float32)
                if host.nbytes != nbytes:
                    raise U2Error(f"calibration batch of shape {host.shape}, expected {tuple(shape)}")
                if not self._device:
                    self._device = int(cuda_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))
                cuda_check(cudart.cudaMemcpy(self._device, host.ctypes.data, nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")
                self.batches_used += 1
                return [self._device for _ in names]
            except BaseException as exc:  # noqa: B036  # kept for the builder, which raises it
                self.error = exc
                return None

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.is_file() and cache.stat().st_size:
                log.info("INT8 scales from the calibration cache %s (delete it to calibrate again)", cache)
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is None:
                return
            try:
                with atomic_path(cache) as tmp:
                    tmp.write_bytes(bytes(data))
            except BaseException as exc:  # noqa: B036  # kept for the builder: TensorRT's callback cannot raise
                self.error = exc
                return
            self.cache_written = True

        def discard_cache(self) -> None:
            """Remove a cache this run wrote: scales from a failed calibration must not be reused."""
            if cache is not None and self.cache_written:
                cache.unlink(missing_ok=True)

        def free(self) -> None:
            if self._device:
                cudart.cudaFree(self._device)
                self._device = 0

    return EntropyCalibrator()
