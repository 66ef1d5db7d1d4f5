"""From the fused probability map back to an 8-bit mask at the original size (and a cut-out).

``reference`` reproduces the authors' script: per-image min-max normalisation, conversion to an
8-bit PIL image (truncating), PIL bilinear resize. ``fast`` (the deployment path, without PyTorch)
normalises the same way, resizes the float32 map once with the anti-aliased bilinear filter
(Pillow's, which ``torch.nn.functional.interpolate(..., antialias=True)`` reproduces to 1e-5) and
rounds instead of truncating. A constant map (max = min), where the authors' normalisation divides
by zero, becomes all zeros.

Cut-outs: :func:`cutout` (RGBA, the mask as alpha) and :func:`on_background` (the image composited
over a solid colour, for formats without alpha); :func:`binary` thresholds a mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def fast_one(pred: np.ndarray, size: Size) -> np.ndarray:
    """One h×w (or 1×h×w) probability map to an H×W uint8 mask.

    The map is scaled to 0–255 and offset by 0.5 *before* the (linear) resize, so that Pillow's
    float-to-8-bit conversion, which truncates, rounds: one pass in C, however large the image.
    """
    scaled = min_max(np.asarray(pred, dtype=np.float32).reshape(pred.shape[-2:])) * np.float32(255)
    scaled += np.float32(0.5)
    im = Image.fromarray(scaled)
    if scaled.shape != tuple(size):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.array(im.convert("L"))


def fast(preds: np.ndarray, sizes: Sequence[Size]) -> list[np.ndarray]:
    """N×1×h×w (or N×h×w) probability maps to H×W uint8 masks, one per original size."""
    preds = preds.reshape(len(sizes), *preds.shape[-2:])
    return [fast_one(pred, size) for pred, size in zip(preds, sizes)]


def postprocess(preds: np.ndarray, sizes: Sequence[Size], mode: str = "fast") -> list[np.ndarray]:
    if mode == "fast":
        return fast(preds, sizes)
    if mode == "reference":
        preds = preds.reshape(len(sizes), *preds.shape[-2:])
        return [reference(p, s) for p, s in zip(preds, sizes)]
    raise ValueError(f"postprocess mode must be 'reference' or 'fast', got {mode!r}")


def postprocess_one(pred: np.ndarray, size: Size, mode: str = "fast") -> np.ndarray:
    """One map to its H×W uint8 mask in the chosen mode (what a pipeline stage calls)."""
    if mode == "fast":
        return fast_one(pred, size)
    if mode == "reference":
        return reference(np.asarray(pred).reshape(pred.shape[-2:]), size)
    raise ValueError(f"postprocess mode must be 'reference' or 'fast', got {mode!r}")


def binary(mask: np.ndarray, threshold: float) -> np.ndarray:
    """0/255 mask: 255 where the saliency (mask / 255) is at least ``threshold`` (0 < threshold ≤ 1)."""
    return np.where(mask >= threshold * 255 - 1e-9, 255, 0).astype(np.uint8)


def _rgb8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) / np.iinfo(image.dtype).max * 255).round().astype(np.uint8)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """H×W×4 uint8 RGBA: the image (8-bit RGB) with the mask as alpha."""
    return np.dstack([_rgb8(image), mask])


def on_background(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """H×W×3 uint8: the image over a solid ``color``, the mask as the blend weight (Pillow's paste)."""
    canvas = Image.new("RGB", (mask.shape[1], mask.shape[0]), tuple(color))
    canvas.paste(Image.fromarray(_rgb8(image)), (0, 0), Image.fromarray(mask))
    return np.array(canvas)
