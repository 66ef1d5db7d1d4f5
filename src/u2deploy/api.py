"""The library in two calls, for whoever just wants a cut-out (as rembg's ``remove``):

    from PIL import Image
    import u2deploy

    cutout = u2deploy.remove(Image.open("photo.jpg"), model="u2netp_int8.onnx")  # RGBA
    mask = u2deploy.mask("photo.jpg", model="u2netp_int8.onnx")                   # L, the photo's size

The pixels are those ``u2bench predict`` writes for the same artifact and image: the same decoding
(EXIF orientation, 16-bit and palette images), the ``fast`` pre- and post-processing, the same runner.
A model named by a string is opened once and cached; :func:`open_model` gives an explicit handle for
control over the backend, threads and device.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .data import postprocess, preprocess
from .data.images import pil_to_array, read_image
from .engines import Runner, open_runner
from .errors import U2Error

ImageInput = str | Path | Image.Image | np.ndarray
DEFAULT_MODEL = "torch:small"  # the embedded demo weights; pass an exported artifact for speed


@dataclass
class Model:
    """An opened artifact and the geometry it runs at; thread-safe (one call at a time on the runner)."""

    runner: Runner
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def saliency_mask(self, image: np.ndarray) -> np.ndarray:
        """H×W uint8 mask of an H×W×C image array, as ``u2bench predict`` computes it."""
        x = preprocess.preprocess_one(image, self.size, "fast", self.mean, self.std)[None]
        with self._lock:
            pred = self.runner.saliency(x)[0]
        return postprocess.postprocess_one(pred, image.shape[:2], "fast")

    def close(self) -> None:
        self.runner.close()


def open_model(model: str | Path = DEFAULT_MODEL, backend: str = "auto", *, size: tuple[int, int] | None = None,
               **options: Any) -> Model:
    """Open ``model`` (an artifact path, ``torch:small`` or ``torch:full``) with runner options such as
    ``threads``, ``device`` or ``weights`` (for ``torch:``); ``size`` for artifacts of any input size."""
    runner = open_runner(str(model), backend, **options)
    spec = runner.info.spec
    return Model(runner, runner.info.size_for(size), spec.mean, spec.std)


@functools.lru_cache(maxsize=4)
def _cached(model: str) -> Model:
    return open_model(model)


def _model(model: str | Path | Model) -> Model:
    return model if isinstance(model, Model) else _cached(str(model))


def _as_array(image: ImageInput) -> np.ndarray:
    """An H×W×C integer array, decoded as ``u2bench predict`` decodes files."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_array(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.dtype not in (np.uint8, np.uint16):
            raise U2Error(f"image array of shape {image.shape} and dtype {image.dtype}: expected H×W×3 uint8 "
                          "(or H×W, H×W×1, H×W×4; uint8 or uint16)")
        return np.ascontiguousarray(image[:, :, :3])
    raise U2Error(f"image of type {type(image).__name__}: expected a path, a PIL.Image or an H×W×3 uint8 array")


def mask(image: ImageInput, model: str | Path | Model = DEFAULT_MODEL, *,
         threshold: float | None = None) -> Image.Image:
    """The saliency mask, an ``L`` image at the image's own size (0/255 with ``threshold``, as ``--threshold``)."""
    pixels = _model(model).saliency_mask(_as_array(image))
    if threshold is not None:
        from .bench.predict import check_threshold

        pixels = postprocess.binary(pixels, check_threshold(threshold))
    return Image.fromarray(pixels, "L")


def remove(image: ImageInput, model: str | Path | Model = DEFAULT_MODEL, *, threshold: float | None = None,
           background: tuple[int, int, int] | None = None) -> Image.Image:
    """The cut-out: RGBA with the mask as alpha, or RGB over a solid ``background`` (as ``--background``)."""
    array = _as_array(image)
    pixels = np.asarray(mask(array, model, threshold=threshold))
    if background is None:
        return Image.fromarray(postprocess.cutout(array, pixels), "RGBA")
    return Image.fromarray(postprocess.on_background(array, pixels, background), "RGB")
