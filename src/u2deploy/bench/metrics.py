"""Salient-object-detection metrics as the U²-Net paper (section 4.2) defines them.

Maps are compared at the ground truth's resolution. Predictions are 8-bit (0…255) saliency maps
(floats in [0, 1] and 16-bit maps are accepted and brought to 8 bits); ground truth is binarised at
half its range (128 for 8-bit masks). Predictions are *not* min-max normalised here, unlike
pysodmetrics: U²-Net's post-processing already normalises each map, and the paper's evaluation
tool scores the saved maps as they are.

The measures:

- PR curve over 256 thresholds (foreground where pred ≥ t) and **maxFβ** (β² = 0.3): precision and
  recall averaged over the dataset at each threshold, Fβ of those averages, maximum over
  thresholds. ``meanF_curve_max`` (the maximum of the mean per-image F curve, what pysodmetrics'
  "curve" reports) is a different, usually lower, number and is labelled separately.
- **MAE** between the map in [0, 1] and the binary ground truth.
- **weighted Fβ** (Margolin et al. 2014, β² = 1 as in their code and the SOD evaluation tools).
- **S-measure** (Fan et al. 2017, α = 0.5), following the authors' MATLAB code.
- **relaxed boundary Fβ** (BASNet / U²-Net): the map thresholded at 0.5, boundary = mask XOR its
  erosion, a boundary pixel counts as correct within ρ = 3 pixels of the other boundary; β² = 0.3.

All per-image measures are averaged over images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import U2Error

BETA2 = 0.3
THRESHOLDS = 256
WF_BETA2 = 1.0
S_ALPHA = 0.5
RELAX_RADIUS = 3
EPS = np.spacing(1.0)  # MATLAB's eps, which the reference codes of wFβ and S-measure add

_CROSS = ndimage.generate_binary_structure(2, 1)


class SizeMismatch(U2Error, ValueError):
    """A prediction and its ground truth differ in size (a ValueError too, as it always was)."""


def binarise_gt(gt: np.ndarray) -> np.ndarray:
    """Foreground where the mask is at least half of its range (≥ 128 for 8-bit masks)."""
    if gt.dtype == np.bool_:
        return gt
    if np.issubdtype(gt.dtype, np.integer):
        return gt >= (int(np.iinfo(gt.dtype).max) + 1) // 2
    return gt > 0.5


def _as_uint8(pred: np.ndarray) -> np.ndarray:
    if pred.dtype == np.uint8:
        return pred
    if pred.dtype == np.uint16:
        return np.round(pred / 257.0).astype(np.uint8)
    return np.clip(np.round(pred * 255.0), 0, 255).astype(np.uint8)


def _as_2d(array: np.ndarray) -> np.ndarray:
    """H×W from H×W or H×W×C (first channel, as the authors' evaluation tool does)."""
    return array[:, :, 0] if array.ndim == 3 else array


def _unit(pred: np.ndarray) -> np.ndarray:
    return _as_uint8(pred).astype(np.float64) / 255.0


def precision_recall(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of one map at thresholds t = 0 … 255 (foreground where pred ≥ t)."""
    pred = _as_uint8(pred).ravel()
    fg = binarise_gt(gt).ravel()
    hist_fg = np.bincount(pred[fg], minlength=THRESHOLDS)
    hist_all = np.bincount(pred, minlength=THRESHOLDS)
    tp = np.cumsum(hist_fg[::-1])[::-1].astype(np.float64)  # pixels ≥ t that are foreground
    predicted = np.cumsum(hist_all[::-1])[::-1].astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = tp / fg.sum() if fg.any() else np.zeros_like(tp)
    return precision, recall


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean(np.abs(_unit(pred) - binarise_gt(gt))))


def f_beta(precision: np.ndarray, recall: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    denom = beta2 * precision + recall
    return np.divide((1 + beta2) * precision * recall, denom, out=np.zeros_like(denom),
                     where=denom > 0)


def _matlab_gaussian_1d(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """One factor of MATLAB's ``fspecial('gaussian', size, sigma)``, which is separable."""
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


_WF_KERNEL = _matlab_gaussian_1d()


def weighted_f(pred: np.ndarray, gt: np.ndarray, beta2: float = WF_BETA2) -> float:
    """Weighted Fβ of Margolin et al. (CVPR 2014), as their MATLAB code computes it.

    Errors are smoothed along the object (pixel dependency) and background errors weigh more the
    farther they lie from the object (pixel importance). 0 for an empty ground truth.
    """
    fg = binarise_gt(gt)
    if not fg.any():
        return 0.0
    p = _unit(pred)
    dist, (iy, ix) = ndimage.distance_transform_edt(~fg, return_indices=True)
    error = np.abs(p - fg)
    error_t = error[iy, ix]  # background pixels take the error of their nearest object pixel
    smoothed = ndimage.correlate1d(error_t, _WF_KERNEL, axis=0, mode="constant", cval=0.0)
    smoothed = ndimage.correlate1d(smoothed, _WF_KERNEL, axis=1, mode="constant", cval=0.0)
    min_error = np.where(fg & (smoothed < error), smoothed, error)
    importance = np.where(fg, 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * dist))
    weighted = min_error * importance
    fg_error = weighted[fg].sum()
    tp = fg.sum() - fg_error
    fp = weighted[~fg].sum()
    recall = 1.0 - fg_error / fg.sum()
    precision = tp / (tp + fp + EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


def _s_object(values: np.ndarray) -> float:
    mean = values.mean()
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return 2.0 * mean / (mean * mean + 1.0 + std + EPS)


def _ssim(p: np.ndarray, g: np.ndarray) -> float:
    """The S-measure's region similarity (a whole-block SSIM, not a windowed one)."""
    n = p.size
    if n == 0:
        return 0.0
    x, y = p.mean(), g.mean()
    dp, dg = p - x, g - y
    # element-wise sums, not np.dot: BLAS threads crawl on a busy machine
    sigma_x = np.sum(dp * dp) / (n - 1 + EPS)
    sigma_y = np.sum(dg * dg) / (n - 1 + EPS)
    sigma_xy = np.sum(dp * dg) / (n - 1 + EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x * x + y * y) * (sigma_x + sigma_y)
    if alpha != 0:
        return float(alpha / (beta + EPS))
    return 1.0 if beta == 0 else 0.0


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = S_ALPHA) -> float:
    """Structure measure of Fan et al. (ICCV 2017): α·object similarity + (1−α)·region similarity.

    The image is split at the object's centroid (rounded as MATLAB does, half away from zero) and
    the four blocks' similarities are weighted by their areas.
    """
    fg = binarise_gt(gt)
    p = _unit(pred)
    y = fg.mean()
    if y == 0:
        return float(1.0 - p.mean())
    if y == 1:
        return float(p.mean())
    object_score = y * _s_object(p[fg]) + (1 - y) * _s_object(1.0 - p[~fg])

    h, w = fg.shape
    rows, cols = np.nonzero(fg)
    cy = int(np.floor(rows.mean() + 1.5))  # MATLAB's 1-based round(), used as an exclusive end
    cx = int(np.floor(cols.mean() + 1.5))
    g = fg.astype(np.float64)
    area = h * w
    region_score = 0.0
    for rs, cs in ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)),
                   (slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w))):
        block = p[rs, cs]
        region_score += _ssim(block, g[rs, cs]) * block.size / area
    return float(max(0.0, alpha * object_score + (1 - alpha) * region_score))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask XOR its erosion: the one-pixel inner contour. The image frame is not a boundary."""
    return mask ^ ndimage.binary_erosion(mask, structure=_CROSS, border_value=1)


def _disk_offsets(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[keep], dx[keep]], axis=1)


def _near_fraction(points: np.ndarray, target: np.ndarray, radius: float) -> float:
    """Fraction of ``points`` (k×2 row, col) with a ``target`` pixel within ``radius``.

    Looks up the few dozen disk offsets around each boundary pixel, which is far cheaper than a
    distance transform of the whole image.
    """
    r = int(np.floor(radius))
    padded = np.pad(target, r)
    rows = points[:, :1] + r + _disk_offsets(radius)[None, :, 0]
    cols = points[:, 1:] + r + _disk_offsets(radius)[None, :, 1]
    return float(padded[rows, cols].any(axis=1).mean())


def relax_boundary_f(pred: np.ndarray, gt: np.ndarray, radius: float = RELAX_RADIUS,
                     beta2: float = BETA2) -> float:
    """Relaxed boundary Fβ (BASNet, U²-Net): boundaries matched within ``radius`` pixels.

    Relaxed precision: fraction of predicted boundary pixels within ``radius`` (Euclidean) of a
    ground-truth boundary pixel; relaxed recall the other way round. 1 when both boundaries are
    empty, 0 when only one is.
    """
    pred_b = _boundary(_as_uint8(pred) >= 128)  # 128/255 is the first level above 0.5
    gt_b = _boundary(binarise_gt(gt))
    if not pred_b.any() or not gt_b.any():
        return float(pred_b.any() == gt_b.any())
    precision = _near_fraction(np.argwhere(pred_b), gt_b, radius)
    recall = _near_fraction(np.argwhere(gt_b), pred_b, radius)
    return float(f_beta(np.array([precision]), np.array([recall]), beta2)[0])


@dataclass(frozen=True)
class ImageScores:
    """Every measure of one map; plain data, so worker processes can send it back."""

    precision: np.ndarray
    recall: np.ndarray
    mae: float
    wF: float
    Sm: float
    relaxFb: float


def score_image(pred: np.ndarray, gt: np.ndarray, name: str | None = None) -> ImageScores:
    """All measures of one map against its ground truth (H×W or H×W×C, first channel used)."""
    pred, gt = _as_2d(pred), _as_2d(gt)
    if pred.shape != gt.shape:
        where = f"{name}: " if name else ""
        raise SizeMismatch(f"{where}prediction is {pred.shape[1]}×{pred.shape[0]} but its ground truth "
                           f"is {gt.shape[1]}×{gt.shape[0]}; maps are compared at the ground "
                           "truth's resolution")
    pred = _as_uint8(pred)
    fg = binarise_gt(gt)
    p, r = precision_recall(pred, fg)
    return ImageScores(p, r, mae(pred, fg), weighted_f(pred, fg), s_measure(pred, fg),
                       relax_boundary_f(pred, fg))


@dataclass
class SODAccumulator:
    """Accumulates per-image scores; maxFβ is taken from dataset-averaged precision and recall.

    ``add`` computes every measure; ``result`` returns them all in one dict. Parity checks and
    folder evaluation both feed it in-memory uint8 maps and ground-truth arrays.
    """

    precisions: list[np.ndarray] = field(default_factory=list)
    recalls: list[np.ndarray] = field(default_factory=list)
    maes: list[float] = field(default_factory=list)
    wfs: list[float] = field(default_factory=list)
    sms: list[float] = field(default_factory=list)
    relax_fbs: list[float] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray, name: str | None = None) -> None:
        """Score one map; ``name`` (e.g. its file) goes into the size-mismatch error."""
        self.add_scores(score_image(pred, gt, name))

    def add_scores(self, scores: ImageScores) -> None:
        self.precisions.append(scores.precision)
        self.recalls.append(scores.recall)
        self.maes.append(scores.mae)
        self.wfs.append(scores.wF)
        self.sms.append(scores.Sm)
        self.relax_fbs.append(scores.relaxFb)

    @property
    def n(self) -> int:
        return len(self.maes)

    def _require(self) -> None:
        if not self.n:
            raise U2Error("no maps were scored (nothing to average)")

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Dataset-mean precision and recall at thresholds 0 … 255."""
        self._require()
        return np.mean(self.precisions, axis=0), np.mean(self.recalls, axis=0)

    def max_f(self) -> float:
        """The paper's maxFβ: Fβ of the dataset-mean precision and recall, maximised over thresholds."""
        return float(f_beta(*self.pr_curve()).max())

    def mean_f_curve_max(self) -> float:
        """Maximum over thresholds of the mean per-image Fβ (pysodmetrics' curve; not the paper's)."""
        self._require()
        return float(np.mean(f_beta(np.array(self.precisions), np.array(self.recalls)), axis=0).max())

    def mean_mae(self) -> float:
        self._require()
        return float(np.mean(self.maes))

    def result(self) -> dict[str, float | int | list[float]]:
        """Every measure: n, maxF, mae, wF, Sm, relaxFb, meanF_curve_max, and the PR curve
        (``pr_precision``/``pr_recall``, lists indexed by threshold 0 … 255)."""
        precision, recall = self.pr_curve()
        return {
            "n": self.n,
            "maxF": self.max_f(),
            "mae": self.mean_mae(),
            "wF": float(np.mean(self.wfs)),
            "Sm": float(np.mean(self.sms)),
            "relaxFb": float(np.mean(self.relax_fbs)),
            "meanF_curve_max": self.mean_f_curve_max(),
            "pr_precision": precision.tolist(),
            "pr_recall": recall.tolist(),
        }
