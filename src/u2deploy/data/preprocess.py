"""From decoded image to network input, two ways.

``reference``: the authors' test script, step for step: scikit-image ``transform.resize`` (order 1,
anti-aliasing when shrinking, ``mode="constant"``) in float64, division by the image maximum,
per-channel mean/std. It is the yardstick, not fast.

``fast``: the deployment path: one anti-aliased bilinear resize per image in PyTorch, float32,
batched. Its difference from the reference on ECSSD is measured by ``tools/compare_preprocessing.py``
and reported in the README.

Both treat an all-black image the same way: the authors' division by the maximum would divide by
zero, so a maximum of 0 leaves the image at 0 (every pixel then normalises to -mean/std).
A grayscale image becomes three identical channels, each normalised with channel 0's mean and std,
exactly as the authors' ``ToTensorLab`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model.registry import IMAGENET_MEAN, IMAGENET_STD
from .images import unit_float

MODES = ("reference", "fast")
Size = tuple[int, int]  # (height, width)


def _normalise(x: np.ndarray | torch.Tensor, channels: int, mean: Sequence[float], std: Sequence[float]):
    """x: C×H×W with C = 1 or 3, already divided by its maximum; returns 3×H×W."""
    if channels == 1:
        x = (x - mean[0]) / std[0]
        return np.repeat(x, 3, axis=0) if isinstance(x, np.ndarray) else x.expand(3, -1, -1)
    m = np.asarray(mean).reshape(3, 1, 1)
    s = np.asarray(std).reshape(3, 1, 1)
    if isinstance(x, torch.Tensor):
        m, s = torch.as_tensor(m, dtype=x.dtype), torch.as_tensor(s, dtype=x.dtype)
    return (x - m) / s


def reference(image: np.ndarray, size: Size = (320, 320), mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """One image (H×W×C integer array) to a 3×h×w float32 array, as the authors' script does."""
    from skimage import transform  # the authors' own resize; imported here as only this mode needs it

    resized = transform.resize(unit_float(image), size, mode="constant")
    peak = np.max(resized)
    if peak > 0:
        resized = resized / peak
    return _normalise(resized.transpose(2, 0, 1), image.shape[2], mean, std).astype(np.float32)


def fast(images: Sequence[np.ndarray], size: Size = (320, 320), mean: Sequence[float] = IMAGENET_MEAN,
         std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Images (H×W×C integer arrays, any sizes) to an N×3×h×w float32 batch."""
    out = np.empty((len(images), 3, *size), dtype=np.float32)
    for i, image in enumerate(images):
        scale = float(np.iinfo(image.dtype).max)
        x = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)).div_(scale)
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False,
                          antialias=True)[0]
        peak = float(x.max())
        if peak > 0:
            x.div_(peak)
        out[i] = _normalise(x, image.shape[2], mean, std).numpy()
    return out


def preprocess(images: Sequence[np.ndarray], size: Size = (320, 320), mode: str = "fast",
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """N×3×h×w float32 network input in the chosen mode."""
    if mode == "fast":
        return fast(images, size, mean, std)
    if mode == "reference":
        return np.stack([reference(im, size, mean, std) for im in images])
    raise ValueError(f"preprocess mode must be one of {MODES}, got {mode!r}")
