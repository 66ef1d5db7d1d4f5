"""Scoring saliency maps against ground truth: a folder of PNGs, or maps held in memory.

Predictions are matched to masks by file stem; files on either side without a partner are counted
and reported in one warning line. Results are written in the JSON schema that the other bench
stages share::

    {"dataset": str, "n": int, "results": [{"backend": str, "artifact": str, "precision": str | null,
                                            "maxF": float, "mae": float, "wF": float, "Sm": float,
                                            "relaxFb": float}]}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import Bound, Dataset, files_by_stem, ground_truth, in_range, pair_folders, parse_subset
from ..data.images import read_image
from ..errors import U2Error
from .metrics import ImageScores, SODAccumulator, score_image
from .plots import PRCurve

log = logging.getLogger(__name__)

METRIC_KEYS = ("maxF", "mae", "wF", "Sm", "relaxFb")


def read_map(path: str | Path) -> np.ndarray:
    """An 8-bit map or mask as H×W (first channel of RGB files, as the authors' tool reads them)."""
    image = read_image(path)[:, :, 0]
    return image if image.dtype == np.uint8 else np.round(image / 257.0).astype(np.uint8)


def _score_files(job: tuple[Path, Path]) -> ImageScores | str:
    """The scores of one pair, or the one-line reason it cannot be scored (a batch keeps going)."""
    pred_path, gt_path = job
    try:
        return score_image(read_map(pred_path), read_map(gt_path), name=str(pred_path))
    except U2Error as exc:
        return str(exc)


def score_files(jobs: Sequence[tuple[Path, Path]], workers: int = 1
                ) -> tuple[SODAccumulator, list[tuple[Path, str]]]:
    """Scores (prediction file, mask file) pairs, in ``workers`` processes when more than one.

    Returns the accumulated scores and every pair that failed (its prediction file and why).
    """
    if workers <= 1 or len(jobs) < 2 * workers:
        return _collect(jobs, map(_score_files, jobs))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return _collect(jobs, pool.map(_score_files, jobs, chunksize=max(1, len(jobs) // (8 * workers))))


def _collect(jobs: Sequence[tuple[Path, Path]], results: Iterable[ImageScores | str]
             ) -> tuple[SODAccumulator, list[tuple[Path, str]]]:
    acc = SODAccumulator()
    failed: list[tuple[Path, str]] = []
    for (pred_path, _), scores in zip(jobs, results, strict=True):
        if isinstance(scores, str):
            failed.append((pred_path, scores))
        else:
            acc.add_scores(scores)
    return acc, failed


def evaluate_maps(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray],
                  names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every metric of in-memory uint8 maps against ground-truth arrays (what parity reuses).

    The same as feeding a :class:`SODAccumulator` and calling ``result()``; ``names`` label
    size-mismatch errors.
    """
    acc = SODAccumulator()
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        acc.add(pred, gt, names[i] if names else None)
    return acc.result()


@dataclass
class Evaluation:
    """One result row: which maps, on which data, and every metric."""

    dataset: str
    artifact: str
    metrics: dict[str, Any]
    seconds: float = 0.0
    backend: str = "files"
    precision: str | None = None
    predictions_without_gt: tuple[Path, ...] = field(default=(), repr=False)
    gt_without_prediction: tuple[Path, ...] = field(default=(), repr=False)
    failed: tuple[tuple[Path, str], ...] = field(default=(), repr=False)  # pairs that could not be scored

    @property
    def n(self) -> int:
        return int(self.metrics["n"])

    def entry(self) -> dict[str, Any]:
        """This result in the shared JSON schema's ``results`` list."""
        return {"backend": self.backend, "artifact": self.artifact, "precision": self.precision,
                **{k: round(float(self.metrics[k]), 6) for k in METRIC_KEYS}}

    def curve(self, label: str | None = None) -> PRCurve:
        """The PR curve for :func:`~u2deploy.bench.plots.plot_pr_curves`."""
        default = Path(self.artifact).name if self.backend == "files" else self.backend
        return PRCurve(label or default, self.metrics["pr_precision"], self.metrics["pr_recall"])


def evaluate_folder(pred_dir: str | Path, gt: str | Path | Dataset, *,
                    images_dir: str | Path | None = None, subset: str | tuple[Bound, Bound] | None = None,
                    limit: int | None = None, workers: int = 1) -> Evaluation:
    """Scores a folder of predicted maps against ground truth matched by file stem.

    ``gt`` is a mask folder, a dataset root (its masks are used), or a :class:`Dataset`;
    ``images_dir`` restricts the ground truth to masks that have an image there; ``subset`` (e.g.
    ``"0801-1000"``) to a stem range, on both sides; ``limit`` keeps the first N matched pairs.
    """
    start = time.perf_counter()
    pred_dir = Path(pred_dir)
    preds = files_by_stem(pred_dir)
    dataset = gt if isinstance(gt, Dataset) else ground_truth(gt)
    if images_dir is not None:
        dataset = pair_folders(images_dir, dataset.masks_dir, dataset.name)
    if subset is not None:
        bounds = parse_subset(subset) if isinstance(subset, str) else subset
        dataset = dataset.select(*bounds)
        preds = {s: p for s, p in preds.items() if in_range(s, *bounds)}
        if not dataset.pairs or not preds:
            raise U2Error(f"subset {subset}: no {'mask' if not dataset.pairs else 'prediction'} in range")
    masks = {p.stem: p.mask for p in dataset}
    matched = sorted(preds.keys() & masks.keys())
    extra = tuple(preds[s] for s in sorted(preds.keys() - masks.keys()))
    missing = tuple(masks[s] for s in sorted(masks.keys() - preds.keys()))
    if not matched:
        raise U2Error(f"{pred_dir}: no prediction has the file stem of a mask in {dataset.masks_dir} "
                      f"(e.g. {next(iter(preds.values())).name} vs {next(iter(masks.values())).name})")
    if extra or missing:
        log.warning("%s", _unmatched_line(dataset.name, extra, missing))
    if limit is not None:
        if limit < 1:
            raise U2Error(f"--limit must be at least 1, not {limit}")
        matched = matched[:limit]
    acc, failed = score_files([(preds[s], masks[s]) for s in matched], workers)
    if len(failed) == len(matched):
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise U2Error(f"no prediction could be scored: {failed[0][1]}{more}")
    return Evaluation(dataset=dataset.name, artifact=str(pred_dir), metrics=acc.result(),
                      seconds=time.perf_counter() - start, predictions_without_gt=extra,
                      gt_without_prediction=missing, failed=tuple(failed))


def _unmatched_line(name: str, extra: Sequence[Path], missing: Sequence[Path]) -> str:
    parts, first = [], []
    if extra:
        parts.append(f"{len(extra)} prediction{'s' if len(extra) > 1 else ''} without a mask")
        first.append(str(extra[0]))
    if missing:
        parts.append(f"{len(missing)} mask{'s' if len(missing) > 1 else ''} without a prediction")
        first.append(str(missing[0]))
    return f"{name}: {', '.join(parts)} (first: {', '.join(first)})"


def report(evaluations: Sequence[Evaluation], dataset: str | None = None) -> dict[str, Any]:
    """The shared JSON document for one or more results on the same data."""
    if not evaluations:
        raise U2Error("no results to report")
    return {"dataset": dataset or evaluations[0].dataset, "n": evaluations[0].n,
            "results": [e.entry() for e in evaluations]}



def format_table(evaluations: Sequence[Evaluation]) -> str:
    """A small fixed-width table: one row per result."""
    header = ("dataset", "artifact", "n", "maxFβ", "MAE", "wFβ", "Sm", "relaxFbβ", "time")
    rows = [(e.dataset, e.artifact, str(e.n), *(f"{e.metrics[k]:.4f}" for k in METRIC_KEYS),
             f"{e.seconds:.1f} s") for e in evaluations]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in (header, *rows))
