"""The parity gate: every built artifact judged by :func:`~u2deploy.bench.parity.run_parity` against the
PyTorch FP32 reference on the real images of ``--data``, at its precision's tolerance
(:func:`~u2deploy.validate.tolerance_for`) unless ``--max-delta-*`` override it.

One ``run_parity`` call per device decodes and preprocesses the images once for all of its artifacts;
one artifact that does not open would stop that call, so the rest are then judged one at a time and
only that row says ``skipped: parity could not run``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...data.datasets import Dataset
from ...engines.base import Runner
from ...errors import U2Error
from ..parity import ParityReport, ParityRow, run_parity
from ..plots import PRCurve
from .options import BenchmarkOptions
from .rows import Row

log = logging.getLogger(__name__)


@dataclass
class Gated:
    n_images: int = 0
    curves: list[PRCurve] = field(default_factory=list)  # the reference's first, then one per gated row
    notes: list[str] = field(default_factory=list)  # images parity could not read


def gate_rows(reference: Runner, rows: Sequence[Row], dataset: Dataset, size: tuple[int, int],
              opts: BenchmarkOptions) -> Gated:
    """Gate every row with an artifact; fill its deltas, ``pass`` and ``status``, and the reference's metrics."""
    candidates = [r for r in rows if r.artifact is not None and not r.reference]
    by_device: dict[str, list[str]] = {}
    for row in candidates:
        by_device.setdefault(row.device, []).append(row.artifact)  # type: ignore[arg-type]
    found: dict[str, ParityRow | U2Error] = {}
    gated = Gated()
    ref: ParityRow | None = None
    for device, artifacts in by_device.items():
        for names, report in _reports(reference, artifacts, device, dataset, size, opts, found):
            ref, gated.n_images = ref or report.rows[0], gated.n_images or report.n
            found.update(zip(names, report.rows[1:], strict=True))
            gated.notes += [note for note in (f"parity skipped {image}: {why}" for image, why in report.skipped)
                            if note not in gated.notes]
    ref_row = next(r for r in rows if r.reference)
    if ref is not None:
        ref_row.maxF, ref_row.mae = ref.evaluation.metrics["maxF"], ref.evaluation.metrics["mae"]
        gated.curves.append(ref.evaluation.curve(f"{ref_row.artifact} (reference)"))
    for row in candidates:
        result = found.get(row.artifact)  # type: ignore[arg-type]
        if not isinstance(result, ParityRow):
            row.skip(f"parity could not run: {result}")
            continue
        _fill(row, result)
        gated.curves.append(result.evaluation.curve(
            f"{Path(row.artifact).name} ({result.evaluation.backend} {row.precision})"))  # type: ignore[arg-type]
    return gated


def _reports(reference: Runner, artifacts: list[str], device: str, dataset: Dataset, size: tuple[int, int],
             opts: BenchmarkOptions, failed: dict[str, ParityRow | U2Error]) -> list[tuple[list[str], ParityReport]]:
    """``run_parity`` of ``artifacts`` in one call, or one call each when one of them stops it (its error
    goes into ``failed``)."""
    def parity(names: list[str]) -> ParityReport:
        return run_parity(reference, names, dataset, size=size, batch=opts.batch, device=device,
                          max_delta_maxf=opts.max_delta_maxf, max_delta_mae=opts.max_delta_mae,
                          progress=opts.progress)

    try:
        return [(artifacts, parity(artifacts))]
    except U2Error as exc:
        log.warning("parity on %s: %s; comparing the candidates one at a time", device, exc)
    reports = []
    for artifact in artifacts:
        try:
            reports.append(([artifact], parity([artifact])))
        except U2Error as one:
            failed[artifact] = one
    return reports


def _fill(row: Row, found: ParityRow) -> None:
    metrics = found.evaluation.metrics
    row.maxF, row.mae = metrics["maxF"], metrics["mae"]
    row.delta_maxF, row.delta_mae = found.delta_maxf, found.delta_mae
    row.max_abs_diff, row.map_mean_abs = float(f"{found.max_abs:.3g}"), found.mean_abs
    row.size_bytes, row.limits, row.passed = found.size_bytes, found.limits, found.passed
    row.status = "ok" if found.passed else f"failed: {found.reason}"
