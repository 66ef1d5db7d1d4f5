"""One verification stage for every export: the artifact against its source, on images it was not
calibrated on, at its precision's map bounds, before the artifact becomes visible.

An export stage writes to a temporary path (:func:`u2deploy.files.atomic_path`), runs :func:`verify`
on it and calls :meth:`Verification.raise_if_failed` before the rename: a broken bound leaves no
artifact and no manifest, and one line with the measured values and the bound. The record's
:meth:`Verification.to_manifest` is the manifest's ``verification`` object.

Which images (:func:`choose_verification_images`), first that applies:

1. ``--verify-images DIR``;
2. held-out ECSSD (0801-1000) in ``../shared/datasets/ECSSD`` beside the repository, or under
   ``$U2DEPLOY_SHARED`` (:func:`u2deploy.data.samples.shared_dir`);
3. images of ``--calib`` that calibration did not draw;
4. generated scenes (:func:`u2deploy.data.samples.generated_images`), as ``u2export onnx`` uses.

Images calibration drew are left out of every source: verifying on them would flatter an INT8 artifact.
The bounds are those of :mod:`.tolerances`: ``max_abs`` where the precision has one (FP32) and the map
``mean_abs`` at every precision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import preprocess
from ..data.images import list_images, read_image
from ..data.samples import ECSSD_HELD_OUT, generated_images, held_out_ecssd, spread
from ..engines.base import Runner
from ..errors import U2Error
from .compare import Comparison, Outputs, compare_maps
from .tolerances import tolerance_for

log = logging.getLogger(__name__)

DEFAULT_N = 8
# What verify() runs: a runner, a function from an N×3×H×W batch to d0 maps or to outputs by name, or
# (reference only) the maps.
Model = Runner | Callable[[np.ndarray], Outputs] | np.ndarray


@dataclass(frozen=True)
class VerificationImages:
    """The images an artifact is verified on (uint8 H×W×3) and where they came from."""

    images: list[np.ndarray]
    source: str  # "verify-images", "ecssd-held-out", "calib-not-drawn" or "generated"
    description: str  # for people: "8 ECSSD images (0801-1000, held out)"
    paths: tuple[Path, ...] = ()  # the files, where they came from disk

    def inputs(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
        """The network inputs, preprocessed as at inference (:func:`u2deploy.data.preprocess.fast`)."""
        return preprocess.fast(self.images, size, mean, std)

    def to_manifest(self) -> dict[str, Any]:
        return {"source": self.source, "description": self.description, "count": len(self.images),
                **({"files": [p.name for p in self.paths]} if self.paths else {})}


def _read(paths: Sequence[Path], n: int) -> tuple[list[np.ndarray], list[Path]]:
    """The first ``n`` readable images of ``paths`` (spread over them); unreadable ones are skipped and said."""
    images: list[np.ndarray] = []
    used: list[Path] = []
    bad: list[str] = []
    first = spread(paths, n)
    for path in [*first, *(p for p in paths if p not in set(first))]:  # the rest stand in for unreadable ones
        if len(images) == n:
            break
        try:
            images.append(read_image(path))
            used.append(path)
        except U2Error as exc:
            bad.append(str(exc))
    if bad:
        log.warning("verification: skipped %d unreadable image%s (first: %s)", len(bad), "s" * (len(bad) > 1),
                    bad[0])
    return images, used


def choose_verification_images(verify_images: Path | None = None, calib_dir: Path | None = None,
                               calib_drawn: Collection[Path] | None = None,
                               n: int = DEFAULT_N, generated_seed: int = 0) -> VerificationImages:
    """``n`` images the artifact was not calibrated on, from the first source that has them (module doc).

    ``calib_drawn``: the files calibration (or FP16's range measurement) read; they are never used.
    ``generated_seed``: which generated scenes, where it comes to those (another seed, other scenes).
    """
    drawn = {Path(p).resolve() for p in calib_drawn or ()}
    if verify_images is not None:
        folder = Path(verify_images)
        if not folder.is_dir():
            raise U2Error(f"--verify-images {folder}: no such folder")
        paths = [p for p in list_images(folder) if p.resolve() not in drawn]
        images, used = _read(paths, n)
        if not images:
            why = "calibration drew all of them" if drawn and list_images(folder) else "no readable images"
            raise U2Error(f"--verify-images {folder}: {why}; name a folder of images the artifact was not "
                          "calibrated on")
        return VerificationImages(images, "verify-images", f"{len(images)} images from {folder}",
                                  tuple(used))
    held_out = held_out_ecssd(drawn)
    if held_out:
        images, used = _read(held_out, n)
        if images:
            left = "" if len(held_out) == len(ECSSD_HELD_OUT) else f", {len(ECSSD_HELD_OUT) - len(held_out)} " \
                                                                   "used by calibration left out"
            return VerificationImages(images, "ecssd-held-out",
                                      f"{len(images)} ECSSD images (0801-1000, held out{left})",
                                      tuple(used))
    if calib_dir is not None and Path(calib_dir).is_dir():
        paths = [p for p in list_images(calib_dir) if p.resolve() not in drawn]
        images, used = _read(paths, n)
        if images:
            return VerificationImages(images, "calib-not-drawn",
                                      f"{len(images)} images of {calib_dir} that calibration did not draw",
                                      tuple(used))
    seeded = f", seed {generated_seed}" if generated_seed else ""
    return VerificationImages(generated_images(n, seed=generated_seed), "generated", f"{n} generated images{seeded}")


@dataclass(frozen=True)
class Bound:
    """The map bounds a precision is held to (from the one table, :mod:`.tolerances`)."""

    precision: str
    max_abs: float | None  # None: not checked at this precision
    mean_abs: float

    @classmethod
    def for_precision(cls, precision: str) -> Bound:
        tolerance = tolerance_for(precision)
        return cls(precision, tolerance.max_abs, tolerance.mean_abs)

    def holds(self, c: Comparison) -> bool:
        return (c.nonfinite == 0 and (self.max_abs is None or c.max_abs <= self.max_abs)
                and c.mean_abs <= self.mean_abs)

    def describe(self) -> str:
        parts = ([f"max|Δ| ≤ {self.max_abs:g}"] if self.max_abs is not None else []) + \
                [f"mean|Δ| ≤ {self.mean_abs:g}"]
        return f"the {self.precision} bound ({', '.join(parts)})"

    def to_manifest(self) -> dict[str, Any]:
        return {"precision": self.precision, "max_abs": self.max_abs, "mean_abs": self.mean_abs}


@dataclass(frozen=True)
class Verification:
    """What was compared with what, on which images, at which bound, and what was measured.

    ``checks`` are named comparisons at the same bound (the first is the main one: all images);
    ``skipped`` says why nothing was compared (``--no-verify``).
    """

    candidate: str
    reference: str
    bound: Bound
    images: VerificationImages | None = None
    checks: tuple[tuple[str, Comparison], ...] = ()
    skipped: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def skip(cls, candidate: str, reference: str, precision: str, why: str = "--no-verify") -> Verification:
        return cls(candidate, reference, Bound.for_precision(precision), skipped=why)

    @property
    def passed(self) -> bool | None:
        """True or False; None when skipped."""
        if self.skipped:
            return None
        return all(self.bound.holds(c) for _, c in self.checks)

    @property
    def worst(self) -> Comparison:
        """The check furthest from its bound (a failed one first)."""
        failed = [c for _, c in self.checks if not self.bound.holds(c)]
        return max(failed or [c for _, c in self.checks], key=lambda c: (c.nonfinite, c.mean_abs, c.max_abs))

    def measured(self) -> str:
        if self.skipped:
            return f"not verified ({self.skipped})"
        c = self.worst
        nan = f", {c.nonfinite} NaN/Inf" if c.nonfinite else ""
        return f"max|Δ| {c.max_abs:.2g}, mean|Δ| {c.mean_abs:.2g}{c.outputs_note()}{nan}"

    def summary(self) -> str:
        """One line: what against what, on what, measured, the bound, the verdict."""
        if self.skipped:
            return f"{self.candidate}: not verified against {self.reference} ({self.skipped})"
        where = next((what for what, c in self.checks if c is self.worst), "")
        at = f" at {where}" if len(self.checks) > 1 and where else ""
        verdict = "pass" if self.passed else "FAIL"
        return (f"{self.candidate} vs {self.reference} on {self.images.description if self.images else '?'}{at}: "
                f"{self.measured()}; {self.bound.describe()}: {verdict}")

    def raise_if_failed(self, artifact: str | Path) -> None:
        """One-line :class:`U2Error` (measured values and bound) when a bound is broken; nothing when skipped."""
        if self.passed is False:
            raise U2Error(f"{artifact}: breaks its bound, nothing written: {self.summary()}")

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``verification`` object."""
        record: dict[str, Any] = {"candidate": self.candidate, "reference": self.reference,
                                  "bound": self.bound.to_manifest(), "passed": self.passed}
        if self.skipped:
            return {**record, "skipped": True, "reason": self.skipped, "images": None}
        c = self.worst
        record |= {"images": self.images.to_manifest() if self.images else None, "max_abs": c.max_abs,
                   "mean_abs": c.mean_abs, "p99_abs": c.p99_abs, "nonfinite": c.nonfinite}
        if len(c.outputs) > 1:
            record["outputs"] = list(c.outputs)
        if len(self.checks) > 1:
            record["checks"] = {what: {"max_abs": c.max_abs, "mean_abs": c.mean_abs, "nonfinite": c.nonfinite,
                                       "passed": self.bound.holds(c)} for what, c in self.checks}
        return record | self.notes


def maps(model: Model, x: np.ndarray) -> Outputs:
    """The outputs of ``x``: a runner's every output by name (one image at a time, or its fixed batch,
    padded); a function's result (its outputs by name, or d0 maps); an array as it is (d0 maps)."""
    if isinstance(model, np.ndarray):
        return model
    if not isinstance(model, Runner):
        out = model(x)
        return out if isinstance(out, Mapping) else np.asarray(out, dtype=np.float32)
    step = max(1, model.info.batch_range[0] if model.info.batch_range else 1)
    padded = np.concatenate([x, np.repeat(x[-1:], -len(x) % step, axis=0)])  # whole batches of a fixed-batch runner
    runs = [model.infer(padded[i:i + step]) for i in range(0, len(padded), step)]
    return {name: np.concatenate([np.asarray(r[name], dtype=np.float32) for r in runs])[:len(x)] for name in runs[0]}


def compare(candidate: Model, reference: Model, x: np.ndarray, precision: str) -> Comparison:
    """One comparison of two models' outputs on ``x``: every output where both give them all, else d0
    (:func:`~u2deploy.validate.compare.compare_maps`), the table's max|Δ| as the element-wise atol."""
    return compare_maps(maps(candidate, x), maps(reference, x), tolerance_for(precision).max_abs)


def verify(candidate: Model, reference: Model, inputs: np.ndarray, precision: str, *,
           images: VerificationImages | None = None, candidate_name: str = "candidate",
           reference_name: str = "reference", what: str | None = None) -> Verification:
    """``candidate`` against ``reference`` on the same preprocessed ``inputs``, at ``precision``'s bounds.

    Either side is a :class:`~u2deploy.engines.base.Runner` (from :func:`u2deploy.engines.open_runner`) or a
    function of an N×3×H×W batch; the reference may also be its maps, computed once.
    """
    comparison = compare(candidate, reference, inputs, precision)
    label = what or f"{len(inputs)} images at {inputs.shape[2]}×{inputs.shape[3]}"
    return Verification(candidate_name, reference_name, Bound.for_precision(precision), images,
                        ((label, comparison),))
