"""One comparator for every backend: error statistics of a candidate's outputs against a reference's.

Either side is one array of maps (N×…, the fused map d0) or a runner's outputs by name: all of
them, d0 … d6 for an artifact exported with ``u2export onnx --outputs all``. Two sets of outputs
are paired in order, since the artifact contract puts d0 first and an export keeps the rest in
order; an array against a set is compared with its first output. The statistics are each the
worst over the outputs compared, so a bound that holds, holds for every output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import U2Error

Outputs = np.ndarray | Mapping[str, np.ndarray]  # d0 maps, or every output by name


@dataclass(frozen=True)
class Comparison:
    """|candidate − reference| over all compared maps, with the tolerance verdict."""

    n_maps: int
    max_abs: float
    mean_abs: float  # the largest of the outputs' mean |Δ|
    p99_abs: float
    max_rel: float  # |Δ| / max(|reference|, 1e-6) at worst, for Polygraphy-style rel checks
    nonfinite: int  # NaN or Inf values in the candidate
    atol: float | None
    passed: bool
    outputs: tuple[str, ...] = ("d0",)  # the candidate's outputs compared, in order

    def summary(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        bound = f" (≤ {self.atol:g})" if self.atol is not None else ""
        nan = f", {self.nonfinite} non-finite" if self.nonfinite else ""
        return (f"max|Δ| {self.max_abs:.2g}{bound}, mean|Δ| {self.mean_abs:.2g} "
                f"on {self.n_maps} maps{self.outputs_note()}{nan}: {verdict}")

    def outputs_note(self) -> str:
        """`` (7 outputs: d0…d6)`` where more than one output was compared, else nothing."""
        if len(self.outputs) < 2:
            return ""
        return f" ({len(self.outputs)} outputs: {self.outputs[0]}…{self.outputs[-1]})"


def _named(outputs: Outputs) -> list[tuple[str, np.ndarray]]:
    if isinstance(outputs, Mapping):
        if not outputs:
            raise U2Error("no outputs to compare")
        return [(name, np.asarray(maps)) for name, maps in outputs.items()]
    return [("d0", np.asarray(outputs))]


def _pairs(candidate: Outputs, reference: Outputs) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, candidate maps, reference maps) of every output compared; one-line errors where none pair."""
    cand, ref = _named(candidate), _named(reference)
    if not isinstance(candidate, Mapping) or not isinstance(reference, Mapping):
        cand, ref = cand[:1], ref[:1]  # one side is d0 alone
    elif len(cand) != len(ref):
        raise U2Error(f"the candidate has {len(cand)} outputs ({', '.join(n for n, _ in cand)}), the reference "
                      f"{len(ref)} ({', '.join(n for n, _ in ref)}): not comparable")
    pairs = []
    for (name, got), (_, want) in zip(cand, ref):
        if got.shape != want.shape:
            raise U2Error(f"the candidate's {name} maps are {got.shape}, the reference's {want.shape}: "
                          "not comparable")
        pairs.append((name, got, want))
    return pairs


def compare_maps(candidate: Outputs, reference: Outputs, atol: float | None = None,
                 rtol: float = 0.0) -> Comparison:
    """Compare every output of ``candidate`` with ``reference``'s (module doc); passes where
    |Δ| ≤ atol + rtol·|reference| everywhere and the candidate is finite. A shape or output-count
    mismatch is a one-line :class:`U2Error`."""
    each = [_compare_one(name, got, want, atol, rtol) for name, got, want in _pairs(candidate, reference)]
    if len(each) == 1:
        return each[0]

    def worst(values: list[float]) -> float:  # NaN (nothing finite to compare) is the worst
        return next((v for v in values if np.isnan(v)), max(values))

    return Comparison(n_maps=each[0].n_maps, max_abs=worst([c.max_abs for c in each]),
                      mean_abs=worst([c.mean_abs for c in each]), p99_abs=worst([c.p99_abs for c in each]),
                      max_rel=worst([c.max_rel for c in each]), nonfinite=sum(c.nonfinite for c in each),
                      atol=atol, passed=all(c.passed for c in each),
                      outputs=tuple(name for c in each for name in c.outputs))


def _compare_one(name: str, candidate: np.ndarray, reference: np.ndarray, atol: float | None,
                 rtol: float) -> Comparison:
    cand = candidate.astype(np.float64)
    ref = reference.astype(np.float64)
    finite = np.isfinite(cand)
    diff = np.abs(np.where(finite, cand, np.inf) - ref)
    nonfinite = int((~finite).sum())
    passed = nonfinite == 0
    if atol is not None:
        passed = passed and bool(np.all(diff <= atol + rtol * np.abs(ref)))
    finite_diff = diff[np.isfinite(diff)]
    return Comparison(
        n_maps=int(candidate.shape[0]) if candidate.ndim else 1,
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(finite_diff.mean()) if finite_diff.size else float("nan"),
        p99_abs=float(np.percentile(finite_diff, 99)) if finite_diff.size else float("nan"),
        max_rel=float((diff / np.maximum(np.abs(ref), 1e-6)).max()) if diff.size else 0.0,
        nonfinite=nonfinite, atol=atol, passed=passed, outputs=(name,))
