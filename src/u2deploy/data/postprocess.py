"""From the fused probability map back to an 8-bit mask at the original size (and a cut-out).

``reference`` reproduces the authors' script: per-image min-max normalisation, conversion to an
8-bit PIL image (truncating), PIL bilinear resize. ``fast`` does the same in one vectorised
PyTorch pass and rounds instead of truncating. A constant map (max = min), where the authors'
normalisation divides by zero, becomes all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .preprocess import Size


def min_max(pred: np.ndarray) -> np.ndarray:
    """Per-map min-max normalisation to [0, 1] over the last two axes."""
    lo = pred.min(axis=(-2, -1), keepdims=True)
    hi = pred.max(axis=(-2, -1), keepdims=True)
    span = hi - lo
    return np.where(span > 0, (pred - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


def reference(pred: np.ndarray, size: Size) -> np.ndarray:
    """One h×w probability map to an H×W uint8 mask, as the authors' ``save_output`` does."""
    im = Image.fromarray(min_max(pred.astype(np.float32)) * 255).convert("RGB")
    return np.asarray(im.resize((size[1], size[0]), resample=Image.BILINEAR))[:, :, 0].copy()


def fast(preds: np.ndarray, sizes: Sequence[Size]) -> list[np.ndarray]:
    """N×1×h×w (or N×h×w) probability maps to H×W uint8 masks, one per original size."""
    preds = preds.reshape(len(sizes), 1, *preds.shape[-2:])
    normalised = torch.from_numpy(min_max(preds))
    masks = []
    for i, size in enumerate(sizes):
        up = F.interpolate(normalised[i:i + 1], size=size, mode="bilinear", align_corners=False,
                           antialias=True)
        masks.append(up[0, 0].mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy())
    return masks


def postprocess(preds: np.ndarray, sizes: Sequence[Size], mode: str = "fast") -> list[np.ndarray]:
    if mode == "fast":
        return fast(preds, sizes)
    if mode == "reference":
        preds = preds.reshape(len(sizes), *preds.shape[-2:])
        return [reference(p, s) for p, s in zip(preds, sizes)]
    raise ValueError(f"postprocess mode must be 'reference' or 'fast', got {mode!r}")


def cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """H×W×4 uint8 RGBA: the image (8-bit RGB) with the mask as alpha."""
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) / np.iinfo(image.dtype).max * 255).round().astype(np.uint8)
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    return np.dstack([rgb, mask])
