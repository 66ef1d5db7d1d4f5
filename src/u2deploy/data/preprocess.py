"""From decoded image to network input, two ways.

``reference``: the authors' test script, step for step: scikit-image ``transform.resize`` (order 1,
anti-aliasing when shrinking, ``mode="constant"``) in float64, division by the image maximum,
per-channel mean/std. It is the yardstick, not fast.

``fast``: the deployment path, without PyTorch: one anti-aliased bilinear resize per image (Pillow's
triangle filter, the one ``torch.nn.functional.interpolate(..., antialias=True)`` reproduces), done
on the 8-bit image itself for 8-bit inputs and in float32 for 16-bit ones; then division by the
maximum and mean/std through a 256-entry table per channel (exact float32 arithmetic on the resized
8-bit values). Resizing in 8 bits rounds each resized pixel to a gray level (≤ 1 level from the
float32 resize, 0.3 on average); its effect on the maps and on maxFβ/MAE is measured by
``tools/compare_preprocessing.py`` and reported in ``docs/preprocessing.md``.

Both treat an all-black image the same way: the authors' division by the maximum would divide by
zero, so a maximum of 0 leaves the image at 0 (every pixel then normalises to -mean/std).
A grayscale image becomes three identical channels, each normalised with channel 0's mean and std,
exactly as the authors' ``ToTensorLab`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..artifact import IMAGENET_MEAN, IMAGENET_STD
from .images import unit_float

MODES = ("reference", "fast")
Size = tuple[int, int]  # (height, width)


def _normalise(x: np.ndarray, channels: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """x: C×H×W with C = 1 or 3, already divided by its maximum; returns 3×H×W."""
    if channels == 1:
        return np.repeat((x - mean[0]) / std[0], 3, axis=0)
    return (x - np.asarray(mean).reshape(3, 1, 1)) / np.asarray(std).reshape(3, 1, 1)


def reference(image: np.ndarray, size: Size = (320, 320), mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """One image (H×W×C integer array) to a 3×h×w float32 array, as the authors' script does."""
    from skimage import transform  # the authors' own resize; imported here as only this mode needs it

    resized = transform.resize(unit_float(image), size, mode="constant")
    peak = np.max(resized)
    if peak > 0:
        resized = resized / peak
    return _normalise(resized.transpose(2, 0, 1), image.shape[2], mean, std).astype(np.float32)


def resize_uint8(image: np.ndarray, size: Size) -> np.ndarray:
    """An H×W×C uint8 image (C = 1 or 3) resized to h×w×C with the anti-aliased bilinear filter, in 8 bits."""
    if image.shape[:2] == tuple(size):
        return image
    im = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    out = np.asarray(im.resize((size[1], size[0]), Image.BILINEAR))
    return out[:, :, None] if out.ndim == 2 else out


def resize_float(plane: np.ndarray, size: Size) -> np.ndarray:
    """One H×W float32 plane resized to h×w with the anti-aliased bilinear filter, in float32."""
    if plane.shape == tuple(size):
        return plane
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
        (size[1], size[0]), Image.BILINEAR))


def fast_one(image: np.ndarray, size: Size = (320, 320), mean: Sequence[float] = IMAGENET_MEAN,
             std: Sequence[float] = IMAGENET_STD, out: np.ndarray | None = None) -> np.ndarray:
    """One image (H×W×C integer array) to a 3×h×w float32 array (written into ``out`` when given)."""
    if out is None:
        out = np.empty((3, *size), dtype=np.float32)
    channels = image.shape[2]
    if channels not in (1, 3):
        raise ValueError(f"expected an H×W×1 or H×W×3 image (read_image's), got {image.shape}")
    if image.dtype == np.uint8:
        small = resize_uint8(image, size)
        peak = int(small.max())
        levels = np.arange(256, dtype=np.float32) / np.float32(peak or 1)
        for c in range(3):
            k = c if channels == 3 else 0
            table = ((levels - np.float32(mean[k])) / np.float32(std[k])).astype(np.float32)
            np.take(table, small[:, :, k], out=out[c])
        return out
    scale = np.float32(np.iinfo(image.dtype).max)
    planes = np.stack([resize_float(image[:, :, c].astype(np.float32) / scale, size) for c in range(channels)])
    peak = float(planes.max())
    if peak > 0:
        planes /= np.float32(peak)
    out[...] = _normalise(planes, channels, mean, std)
    return out


def fast(images: Sequence[np.ndarray], size: Size = (320, 320), mean: Sequence[float] = IMAGENET_MEAN,
         std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Images (H×W×C integer arrays, any sizes) to an N×3×h×w float32 batch."""
    out = np.empty((len(images), 3, *size), dtype=np.float32)
    for i, image in enumerate(images):
        fast_one(image, size, mean, std, out=out[i])
    return out


def preprocess(images: Sequence[np.ndarray], size: Size = (320, 320), mode: str = "fast",
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """N×3×h×w float32 network input in the chosen mode."""
    if mode == "fast":
        return fast(images, size, mean, std)
    if mode == "reference":
        return np.stack([reference(im, size, mean, std) for im in images])
    raise ValueError(f"preprocess mode must be one of {MODES}, got {mode!r}")


def preprocess_one(image: np.ndarray, size: Size = (320, 320), mode: str = "fast",
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """One image to its 3×h×w float32 network input in the chosen mode (what a pipeline stage calls)."""
    if mode == "fast":
        return fast_one(image, size, mean, std)
    if mode == "reference":
        return reference(image, size, mean, std)
    raise ValueError(f"preprocess mode must be one of {MODES}, got {mode!r}")
