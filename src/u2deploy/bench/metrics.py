"""Salient-object-detection metrics as the U²-Net paper (section 4.2) defines them.

Maps are compared at the ground truth's resolution. Predictions are 8-bit (0…255) saliency maps;
ground truth is binarised at 128.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BETA2 = 0.3
THRESHOLDS = 256


def binarise_gt(gt: np.ndarray) -> np.ndarray:
    return gt >= 128 if gt.dtype == np.uint8 else gt > 0.5


def _as_uint8(pred: np.ndarray) -> np.ndarray:
    if pred.dtype == np.uint8:
        return pred
    return np.clip(np.round(pred * 255.0), 0, 255).astype(np.uint8)


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
    return float(np.mean(np.abs(_as_uint8(pred).astype(np.float64) / 255.0 - binarise_gt(gt))))


def f_beta(precision: np.ndarray, recall: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    denom = beta2 * precision + recall
    return np.divide((1 + beta2) * precision * recall, denom, out=np.zeros_like(denom),
                     where=denom > 0)


@dataclass
class SODAccumulator:
    """Accumulates per-image PR and MAE; maxFβ is taken from dataset-averaged precision and recall."""

    precisions: list[np.ndarray] = field(default_factory=list)
    recalls: list[np.ndarray] = field(default_factory=list)
    maes: list[float] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        if pred.shape[:2] != gt.shape[:2]:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
        p, r = precision_recall(pred, gt)
        self.precisions.append(p)
        self.recalls.append(r)
        self.maes.append(mae(pred, gt))

    @property
    def n(self) -> int:
        return len(self.maes)

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        return np.mean(self.precisions, axis=0), np.mean(self.recalls, axis=0)

    def max_f(self) -> float:
        """The paper's maxFβ: Fβ of the dataset-mean precision and recall, maximised over thresholds."""
        return float(f_beta(*self.pr_curve()).max())

    def mean_mae(self) -> float:
        return float(np.mean(self.maes))
