"""One comparator for every backend: error statistics of a candidate's maps against a reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """|candidate − reference| over all compared maps, with the tolerance verdict."""

    n_maps: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float  # |Δ| / max(|reference|, 1e-6) at worst, for Polygraphy-style rel checks
    nonfinite: int  # NaN or Inf values in the candidate
    atol: float | None
    passed: bool

    def summary(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        bound = f" (≤ {self.atol:g})" if self.atol is not None else ""
        nan = f", {self.nonfinite} non-finite" if self.nonfinite else ""
        return (f"max|Δ| {self.max_abs:.2g}{bound}, mean|Δ| {self.mean_abs:.2g} "
                f"on {self.n_maps} maps{nan}: {verdict}")


def compare_maps(candidate: np.ndarray, reference: np.ndarray, atol: float | None = None,
                 rtol: float = 0.0) -> Comparison:
    """Compare same-shaped arrays of maps (N×…); passes where |Δ| ≤ atol + rtol·|reference|."""
    if candidate.shape != reference.shape:
        raise ValueError(f"shape {candidate.shape} differs from the reference's {reference.shape}")
    cand = candidate.astype(np.float64)
    ref = reference.astype(np.float64)
    finite = np.isfinite(cand)
    diff = np.abs(np.where(finite, cand, np.inf) - ref)
    nonfinite = int((~finite).sum())
    max_abs = float(diff.max()) if diff.size else 0.0
    passed = nonfinite == 0
    if atol is not None:
        passed = passed and bool(np.all(diff <= atol + rtol * np.abs(ref)))
    finite_diff = diff[np.isfinite(diff)]
    return Comparison(
        n_maps=int(candidate.shape[0]) if candidate.ndim else 1,
        max_abs=max_abs,
        mean_abs=float(finite_diff.mean()) if finite_diff.size else float("nan"),
        p99_abs=float(np.percentile(finite_diff, 99)) if finite_diff.size else float("nan"),
        max_rel=float((diff / np.maximum(np.abs(ref), 1e-6)).max()) if diff.size else 0.0,
        nonfinite=nonfinite, atol=atol, passed=passed)
