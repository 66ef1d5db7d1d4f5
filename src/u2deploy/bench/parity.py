"""Parity: every candidate artifact against the PyTorch reference, on the same real inputs.

The check behind CI and behind the claim "this artifact is as accurate as the model": each
candidate's fused maps are compared with PyTorch's at map level (max and mean |Δ|) and through
the paper's metrics against the ground truth (ΔmaxFβ, ΔMAE), within the declared tolerance of
its precision (:mod:`u2deploy.validate.tolerances`). Absolute metrics are reported too, since a
preprocessing bug shared by both sides cannot show up as a delta.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import hardware
from ..data import postprocess, preprocess
from ..data.datasets import Dataset
from ..data.images import read_image
from ..engines import Runner, open_runner
from ..errors import U2Error
from ..validate import compare_maps, tolerance_for
from .evaluate import METRIC_KEYS, Evaluation, evaluate_maps, read_map
from .predict import input_geometry, normalisation, run_batched


@dataclass
class ParityRow:
    evaluation: Evaluation
    size_bytes: int | None
    seconds_per_image: float
    delta_maxf: float = 0.0
    delta_mae: float = 0.0
    max_abs: float = 0.0
    mean_abs: float = 0.0
    limits: dict[str, float | None] = field(default_factory=dict)
    passed: bool = True
    reason: str = ""

    def entry(self) -> dict[str, Any]:
        return {**self.evaluation.entry(), "delta_maxF": round(self.delta_maxf, 6),
                "delta_mae": round(self.delta_mae, 6), "max_abs_diff": float(f"{self.max_abs:.3g}"),
                "mean_abs_diff": float(f"{self.mean_abs:.3g}"), "map_mean_abs": round(self.mean_abs, 6),
                "size_bytes": self.size_bytes,
                "ms_per_image": round(self.seconds_per_image * 1e3, 2), "limits": self.limits,
                "pass": self.passed, **({"reason": self.reason} if self.reason else {})}


@dataclass
class ParityReport:
    dataset: str
    n: int
    size: tuple[int, int]
    rows: list[ParityRow]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, why) pairs left out

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows) and not self.skipped

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "n": self.n, "size": list(self.size),
                "results": [r.entry() for r in self.rows], "hardware": hardware.describe(),
                "skipped": [{"image": image, "reason": why} for image, why in self.skipped]}


def _maps(runner: Runner, x: np.ndarray, batch: int, progress: bool) -> tuple[np.ndarray, float]:
    _, fixed_batch = input_geometry(runner, tuple(x.shape[2:]))
    step = fixed_batch or batch
    started = time.perf_counter()
    chunks = []
    name = Path(runner.info.path).name
    with tqdm(total=len(x), desc=name, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(x), step):
            chunks.append(run_batched(runner, x[start:start + step], fixed_batch, step))
            bar.update(len(chunks[-1]))
    runner.synchronize()
    return np.concatenate(chunks).astype(np.float32), (time.perf_counter() - started) / len(x)


def _read_pairs(pairs: Sequence[Any], progress: bool) -> tuple[list[Any], list[np.ndarray], list[np.ndarray],
                                                               list[tuple[str, str]]]:
    """Images and masks that load; every pair that does not is named, and the run goes on."""
    kept, images, gts, skipped = [], [], [], []
    for pair in tqdm(pairs, desc="read", disable=not progress, leave=False):
        try:
            image, gt = read_image(pair.image), read_map(pair.mask)
        except U2Error as exc:
            skipped.append((str(pair.image), str(exc)))
            continue
        if image.shape[:2] != gt.shape:
            skipped.append((str(pair.image), f"{pair.image}: image is {image.shape[1]}×{image.shape[0]} but its "
                                             f"mask {pair.mask} is {gt.shape[1]}×{gt.shape[0]}"))
            continue
        kept.append(pair)
        images.append(image)
        gts.append(gt)
    return kept, images, gts, skipped


def run_parity(reference: Runner, candidates: Sequence[str], dataset: Dataset, *,
               size: tuple[int, int] | None = None, batch: int = 8, device: str = "cpu", backend: str = "auto",
               max_delta_maxf: float | None = None, max_delta_mae: float | None = None,
               progress: bool = True) -> ParityReport:
    """Run ``reference`` and each candidate on ``dataset``; judge each against the reference.

    ``backend`` runs every candidate on that backend (``auto``: each format's default).
    """
    if not dataset.pairs:
        raise U2Error(f"{dataset.name}: no image/mask pairs to compare on")
    size, _ = input_geometry(reference, size)
    mean, std = normalisation(reference)
    pairs, images, gts, skipped = _read_pairs(list(dataset), progress)
    if not pairs:
        raise U2Error(f"{dataset.name}: no image/mask pair could be read ({skipped[0][1]})")
    sizes = [im.shape[:2] for im in images]
    x = preprocess.fast(images, size, mean, std)
    del images

    def evaluate(runner: Runner, label: str) -> tuple[np.ndarray, Evaluation, float]:
        d0, per_image = _maps(runner, x, batch, progress)
        masks = postprocess.fast(d0, sizes)
        metrics = evaluate_maps(masks, gts, [str(p.image) for p in pairs])
        info = runner.info
        return d0, Evaluation(dataset.name, label, metrics, backend=runner.describe(),
                              precision=info.precision), per_image

    ref_d0, ref_eval, ref_time = evaluate(reference, reference.info.path)
    rows = [ParityRow(ref_eval, reference.info.size_bytes, ref_time,
                      reason="reference")]
    for artifact in candidates:
        with open_runner(artifact, backend, device=device) as runner:
            fixed = runner.info.input_size
            if fixed is not None and fixed != size:
                raise U2Error(f"{artifact}: fixed input {fixed[0]}×{fixed[1]}, but the reference runs at "
                              f"{size[0]}×{size[1]}; pass --size or export at that size")
            d0, ev, per_image = evaluate(runner, artifact)
            size_bytes = runner.info.size_bytes
        rows.append(_judge(ev, ref_eval, d0, ref_d0, size_bytes, per_image, max_delta_maxf, max_delta_mae))
    return ParityReport(dataset.name, len(pairs), size, rows, skipped)


def _judge(ev: Evaluation, ref: Evaluation, d0: np.ndarray, ref_d0: np.ndarray, size_bytes: int | None,
           per_image: float, max_delta_maxf: float | None, max_delta_mae: float | None) -> ParityRow:
    tol = tolerance_for(ev.precision or "fp32")
    limits = {"delta_maxF": max_delta_maxf if max_delta_maxf is not None else tol.delta_maxf,
              "delta_mae": max_delta_mae if max_delta_mae is not None else tol.delta_mae,
              "max_abs_diff": tol.max_abs, "map_mean_abs": tol.mean_abs}
    cmp = compare_maps(d0, ref_d0, limits["max_abs_diff"])
    row = ParityRow(ev, size_bytes, per_image,
                    delta_maxf=ev.metrics["maxF"] - ref.metrics["maxF"],
                    delta_mae=ev.metrics["mae"] - ref.metrics["mae"],
                    max_abs=cmp.max_abs, mean_abs=cmp.mean_abs, limits=limits)
    failures = []
    if cmp.nonfinite:
        failures.append(f"{cmp.nonfinite} non-finite values")
    if abs(row.delta_maxf) > limits["delta_maxF"]:
        failures.append(f"|ΔmaxFβ| {abs(row.delta_maxf):.4f} > {limits['delta_maxF']}")
    if abs(row.delta_mae) > limits["delta_mae"]:
        failures.append(f"|ΔMAE| {abs(row.delta_mae):.4f} > {limits['delta_mae']}")
    if cmp.mean_abs > limits["map_mean_abs"]:
        failures.append(f"map mean|Δ| {cmp.mean_abs:.4f} > {limits['map_mean_abs']:g}")
    if limits["max_abs_diff"] is not None and cmp.max_abs > limits["max_abs_diff"]:
        failures.append(f"max|Δ| {cmp.max_abs:.2g} > {limits['max_abs_diff']:g}")
    row.passed, row.reason = not failures, "; ".join(failures)
    return row


def format_parity(report: ParityReport) -> str:
    """One row per backend with a ✅/❌ status, as Ultralytics' benchmark prints."""
    header = ("", "backend", "precision", "artifact", "size", *("maxFβ", "MAE", "wFβ", "Sm", "relaxFbβ"),
              "ΔmaxFβ", "ΔMAE", "max|Δ|", "mean|Δ|", "ms/img")
    rows = []
    for r in report.rows:
        e = r.evaluation
        size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes else "-"
        ref = r.reason == "reference"
        rows.append(("✅" if r.passed else "❌", e.backend, e.precision or "-", Path(e.artifact).name, size,
                     *(f"{e.metrics[k]:.4f}" for k in METRIC_KEYS),
                     "ref" if ref else f"{r.delta_maxf:+.4f}", "ref" if ref else f"{r.delta_mae:+.4f}",
                     "ref" if ref else f"{r.max_abs:.1e}", "ref" if ref else f"{r.mean_abs:.1e}",
                     f"{r.seconds_per_image * 1e3:.1f}"))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    lines.insert(0, f"{report.dataset}: {report.n} images at {report.size[0]}×{report.size[1]} · "
                    f"{hardware.isa_line()}")
    lines += [f"❌ {Path(r.evaluation.artifact).name}: {r.reason}" for r in report.rows if not r.passed]
    lines += [f"❌ skipped {why}" for _, why in report.skipped]
    return "\n".join(lines)
