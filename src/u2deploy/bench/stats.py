"""Summaries of timing samples: nearest-rank percentiles that are reported only when they mean something.

A percentile is given only when enough samples exist for it to be more than the maximum in disguise:
p99 needs 100, p90 needs 10; below that, ``None`` (and ``n/a (<100 runs)`` in tables).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (50, 90, 99)
# The fewest samples for which a percentile is more than the maximum in disguise.
MIN_SAMPLES = {50: 1, 90: 10, 99: 100}


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q % of the samples at or below it."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


@dataclass(frozen=True)
class Stats:
    """Summary of timing samples in milliseconds; percentiles without enough samples are ``None``."""

    n: int
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float
    std: float | None  # sample standard deviation; None for a single sample
    min: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        if len(samples_ms) == 0:
            raise ValueError("no timing samples")
        s = sorted(float(x) for x in samples_ms)
        n = len(s)
        pct = {q: percentile(s, q) if n >= MIN_SAMPLES[q] else None for q in PERCENTILES}
        mean = sum(s) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1)) if n > 1 else None
        return cls(n, pct[50], pct[90], pct[99], mean, std, s[0], s[-1])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_ms(value: float | None, q: int | None = None) -> str:
    """A latency for people: ``n/a (<100 runs)`` instead of a p99 that is really the maximum."""
    if value is None:
        return f"n/a (<{MIN_SAMPLES[q]} runs)" if q is not None else "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"
