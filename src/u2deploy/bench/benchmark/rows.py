"""One typed row per ``FORMAT:PRECISION``: what each stage fills in, its JSON, and the recommendation.

Every stage writes into the same :class:`Row`, so the table, the JSON and the ship line can never
disagree about a number; a row a stage could not fill keeps None (null in the JSON), never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import U2Error
from .targets import BASELINE, REFERENCE, Target, target_device, unavailable

# The keys every JSON row carries (null where they do not apply), in this order; more follow them.
ROW_KEYS = ("artifact", "format", "precision", "size_bytes", "delta_maxF", "delta_mae", "map_mean_abs", "pass",
            "latency_ms_p50", "ratio", "ratio_min", "ratio_max", "peak_rss_bytes", "status")


@dataclass
class Row:
    """One line of the table and one JSON row."""

    name: str  # FORMAT:PRECISION
    format: str  # the format's key (onnx, openvino, trt, torch)
    precision: str
    backend: str
    device: str
    status: str = "ok"  # "reference", "ok", "failed: <gate>", "skipped: <reason>"
    artifact: str | None = None
    size_bytes: int | None = None
    # the gate (u2bench parity against the reference)
    maxF: float | None = None
    mae: float | None = None
    delta_maxF: float | None = None
    delta_mae: float | None = None
    max_abs_diff: float | None = None
    map_mean_abs: float | None = None
    passed: bool | None = None
    limits: dict[str, float | None] | None = None
    # the paired run, model only: median over rounds of each burst's ms per call, ratios to the baseline
    latency_ms_p50: float | None = None
    ratio: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    rounds: int | None = None
    round_ms: list[float] | None = None
    # the paired run, end to end on real images
    e2e_ms_p50: float | None = None
    e2e_ratio: float | None = None
    e2e_ratio_min: float | None = None
    e2e_ratio_max: float | None = None
    # a fresh process of its own
    peak_rss_bytes: int | None = None
    rss_baseline_bytes: int | None = None
    # the build
    build_command: str | None = None
    cached: bool | None = None
    build_seconds: float | None = None

    @property
    def skipped(self) -> bool:
        return self.status.startswith("skipped")

    @property
    def reference(self) -> bool:
        return self.status == "reference"

    @property
    def target_key(self) -> tuple[str, str]:
        return self.format, self.precision

    def skip(self, why: str) -> None:
        self.status = f"skipped: {why}"

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, digits: int = 6) -> float | None:
            return None if x is None else round(float(x), digits)

        first = (self.artifact, self.format, self.precision, self.size_bytes, r(self.delta_maxF), r(self.delta_mae),
                 r(self.map_mean_abs), self.passed, r(self.latency_ms_p50, 4), r(self.ratio, 4),
                 r(self.ratio_min, 4), r(self.ratio_max, 4), self.peak_rss_bytes, self.status)
        return {**dict(zip(ROW_KEYS, first, strict=True)), "name": self.name, "backend": self.backend,
                "device": self.device, "maxF": r(self.maxF), "mae": r(self.mae), "max_abs_diff": self.max_abs_diff,
                "limits": self.limits, "rounds": self.rounds, "round_ms": self.round_ms,
                "e2e_latency_ms_p50": r(self.e2e_ms_p50, 4), "e2e_ratio": r(self.e2e_ratio, 4),
                "e2e_ratio_min": r(self.e2e_ratio_min, 4), "e2e_ratio_max": r(self.e2e_ratio_max, 4),
                "rss_baseline_bytes": self.rss_baseline_bytes, "build_command": self.build_command,
                "cached": self.cached, "build_seconds": r(self.build_seconds, 1)}


def plan_rows(targets: Sequence[Target], variant: str, device: str, calib_dir: Path | None,
              weights: Path) -> list[Row]:
    """One row per target: the reference, the rest ``ok`` or ``skipped`` with the reason."""
    rows = []
    for target in targets:
        why = unavailable(target, device, calib_dir)
        row = Row(target.name, target.fmt.key, target.precision, target.backend.name, target_device(target, device))
        if target.key == REFERENCE:
            row.status, row.artifact, row.size_bytes = "reference", f"torch:{variant}", weights.stat().st_size
        elif why and target.key == BASELINE:
            raise U2Error(f"onnx:fp32 cannot run here ({why}); it is the baseline of every ratio")
        elif why:
            row.skip(why)
        rows.append(row)
    return rows


def recommend(rows: Sequence[Row]) -> Row | None:
    """The passing artifact with the lowest model-only batch-1 p50 of the paired run (never the reference,
    never one that failed its gate or was not timed)."""
    eligible = [r for r in rows if r.passed is True and not r.reference and r.latency_ms_p50 is not None
                and r.artifact is not None]
    return min(eligible, key=lambda r: (r.latency_ms_p50, r.ratio if r.ratio is not None else 0.0), default=None)
