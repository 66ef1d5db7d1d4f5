"""What :func:`~u2deploy.bench.benchmark.run_benchmark` returns: the rows, the one to ship, where and how
it was measured; :meth:`BenchmarkResult.to_json` is the ``--json`` file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import __version__
from ..plots import PRCurve
from .rows import Row


@dataclass
class BenchmarkResult:
    rows: list[Row]
    recommended: Row | None
    baseline: Row
    hardware: dict[str, Any]
    dataset: str
    n_images: int
    size: tuple[int, int]
    out: Path
    command: str
    seconds: dict[str, float]
    timing: dict[str, Any]
    curves: list[PRCurve] = field(default_factory=list)  # one per gated row, the reference first
    step_commands: list[str] = field(default_factory=list)  # u2bench parity / latency, step by step
    notes: list[str] = field(default_factory=list)  # lines printed under the table (skipped images …)

    @property
    def reference(self) -> Row:
        return next(r for r in self.rows if r.reference)

    def to_json(self) -> dict[str, Any]:
        best = self.recommended
        return {"hardware": self.hardware, "rows": [r.to_json() for r in self.rows],
                "recommended": best.artifact if best else None, "recommended_name": best.name if best else None,
                "rebuild": best.build_command if best else None, "baseline": self.baseline.artifact,
                "dataset": self.dataset, "n_images": self.n_images, "size": list(self.size), "out": str(self.out),
                "command": self.command, "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
                "timing": self.timing, "step_commands": self.step_commands, "notes": self.notes,
                "u2deploy": __version__}
