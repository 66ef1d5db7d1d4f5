"""What one ``u2bench benchmark`` run is given, and the command lines that repeat it: the whole run, and
its gate and timing one ``u2bench`` command each (a reviewer reruns the step they doubt)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rows import Row
from .targets import BASELINE


@dataclass(frozen=True)
class BenchmarkOptions:
    data: Path
    variant: str = "small"
    weights: Path | None = None
    subset: str | None = None
    limit: int | None = None
    calib: Path | None = None  # None: the quantize stage's default (DUTS-TR/DUTS-TR-Image)
    calib_subset: str | None = None  # a stem range of --calib, linked into OUT (e.g. ECSSD 0001-0800)
    calib_num: int = 300
    seed: int = 0
    size: tuple[int, int] | None = None
    formats: str | None = None
    device: str = "cpu"
    threads: int | None = None
    min_time_s: float = 20.0
    warmup_s: float = 1.0
    batch: int = 8  # parity batch
    out: Path | None = None
    max_delta_maxf: float | None = None
    max_delta_mae: float | None = None
    end_to_end: bool = True
    rss: bool = True
    progress: bool = True

    def command(self, json_out: Path | None = None, report: Path | None = None) -> str:
        """The ``u2bench benchmark`` command line that repeats this run."""
        args = ["u2bench", "benchmark", "--variant", self.variant]
        pairs: list[tuple[str, Any]] = [
            ("--weights", self.weights), ("--data", self.data), ("--subset", self.subset), ("--limit", self.limit),
            ("--calib", self.calib), ("--calib-subset", self.calib_subset),
            ("--calib-num", self.calib_num if self.calib_num != 300 else None),
            ("--seed", self.seed or None), ("--size", f"{self.size[0]}x{self.size[1]}" if self.size else None),
            ("--formats", self.formats), ("--device", self.device if self.device != "cpu" else None),
            ("--threads", self.threads), ("--min-time-s", self.min_time_s), ("--warmup-s", self.warmup_s),
            ("--out", self.out), ("--max-delta-maxf", self.max_delta_maxf), ("--max-delta-mae", self.max_delta_mae),
            ("--json", json_out), ("--report", report)]
        for flag, value in pairs:
            if value is not None:
                args += [flag, str(value)]
        args += [] if self.end_to_end else ["--no-end-to-end"]
        args += [] if self.rss else ["--no-rss"]
        return shlex.join(args)


def step_commands(opts: BenchmarkOptions, rows: Sequence[Row], size: tuple[int, int],
                  images: Path | None = None) -> list[str]:
    """``u2bench parity`` (one per device) and ``u2bench latency --paired`` (model only, then end to end on
    ``images``) commands that repeat the gate and the timing."""
    gated = [r for r in rows if r.artifact and not r.reference and not r.skipped]
    weights = ["--weights", str(opts.weights)] if opts.weights else []
    commands = []
    for device in dict.fromkeys(r.device for r in gated):
        args = ["u2bench", "parity", "--variant", opts.variant, *weights, "--data", str(opts.data)]
        args += ["--subset", opts.subset] if opts.subset else []
        args += ["--limit", str(opts.limit)] if opts.limit else []
        args += ["--size", f"{size[0]}x{size[1]}", *(["--device", device] if device != "cpu" else [])]
        for flag, value in (("--max-delta-maxf", opts.max_delta_maxf), ("--max-delta-mae", opts.max_delta_mae)):
            args += [flag, str(value)] if value is not None else []
        args += [a for r in gated if r.device == device for a in ("--candidates", str(r.artifact))]
        commands.append(shlex.join(args))
    baseline = [r for r in gated if (r.format, r.precision) == BASELINE]
    models = [*baseline, *[r for r in gated if r not in baseline]]
    latency = ["u2bench", "latency", *[a for r in models for a in ("--model", str(r.artifact))], "--model",
               f"torch:{opts.variant}", *weights, "--paired", "--size", f"{size[0]}x{size[1]}",
               "--min-time-s", f"{opts.min_time_s:g}", "--warmup-s", f"{opts.warmup_s:g}",
               *(["--threads", str(opts.threads)] if opts.threads else []),
               *(["--device", opts.device] if opts.device != "cpu" else [])]
    commands.append(shlex.join(latency))
    if opts.end_to_end and images is not None:
        commands.append(shlex.join([*latency, "--end-to-end", "--images", str(images)]))
    return commands
