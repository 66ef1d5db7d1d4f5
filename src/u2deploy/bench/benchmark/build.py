"""Build each artifact into ``--out`` through the stage its row of the format table names
(:mod:`u2deploy.export.stages`: the library call of its ``u2export`` command), or reuse the one
already there (:mod:`.cache`), and record the command that rebuilds it.

There is no second code path and no per-format branch here: a row's :class:`~u2deploy.formats.Build`
says which stage makes it, from which artifact (the FP32 ONNX, built from the network, for most;
a site from the ONNX of its precision) and under which name. An artifact's source is built first,
on demand, whether or not its own row was asked for. INT8 calibration ranges are the quantize
stage's own cache (``MODEL.calib.json``), reused on its own terms.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ...errors import U2Error
from ...export import stages
from ...files import sha256_of
from ...formats import by_key, by_name
from .cache import ArtifactCache
from .outdir import OutFolder
from .rows import Row
from .targets import BASELINE, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildContext:
    """What every stage builds from."""

    out: Path
    variant: str
    weights: Path | None  # None: the variant's embedded weights
    weights_sha256: str
    size: tuple[int, int]
    calib_dir: Path | None
    calib_digest: str | None  # the images the INT8 stages sample (names and sizes)
    calib_all_digest: str | None  # every image of the folder (what the FP16 stage draws its 8 from)
    calib_num: int
    seed: int

    def request(self, target: Target, source: Path | None) -> stages.StageRequest:
        return stages.StageRequest(
            target.name, artifact_path(self.out, self.variant, self.size, target), source, self.variant,
            self.weights, self.weights_sha256, self.size, self.calib_dir, self.calib_digest, self.calib_all_digest,
            self.calib_num, self.seed)


@dataclass(frozen=True)
class Built:
    path: Path
    cached: bool
    seconds: float
    commands: tuple[str, ...]  # the u2export commands that rebuild it, its sources' first

    @property
    def command(self) -> str:
        return " && ".join(self.commands)


@dataclass
class Builder:
    """Builds targets and the artifacts they are built from, each once."""

    ctx: BuildContext
    cache: ArtifactCache
    folder: OutFolder
    say: Callable[[str], None]
    built: dict[tuple[str, str], Built] = field(default_factory=dict)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)

    def __call__(self, target: Target) -> Built:
        if target.key in self.failed:
            raise U2Error(self.failed[target.key])
        if target.key not in self.built:
            try:
                self.built[target.key] = build(target, self.ctx, self.cache, self._source(target), self.say,
                                               self.folder)
            except U2Error as exc:
                self.failed[target.key] = str(exc)
                raise
        return self.built[target.key]

    def _source(self, target: Target) -> Built | None:
        made = target.fmt.build(target.precision)
        if made is None or made.source is None:
            return None
        fmt, precision = by_name(made.source)
        try:
            return self(Target(fmt, precision))
        except U2Error as exc:
            raise U2Error(f"its source {made.source} could not be built ({exc})") from None


def weights_of(variant: str, weights: Path | None) -> tuple[str, Path]:
    """The sha256 and path of the weights the reference and every artifact are built from."""
    from ...model.registry import default_weights

    path = weights
    if path is None:
        info = default_weights(variant)
        path = info.path if info is not None else None
    if path is None or not Path(path).is_file():
        raise U2Error(f"--variant {variant} has no embedded weights; pass --weights PATH")
    return sha256_of(path), Path(path)


def artifact_path(out: Path, variant: str, size: tuple[int, int], target: Target) -> Path:
    """``u2netp_320x320`` named by the row's rule: ``u2netp_320x320_int8_openvino.xml``."""
    made = target.fmt.build(target.precision)
    if made is None:
        raise U2Error(f"{target.name}: the benchmark builds no {target.fmt.name} artifact")
    return out / made.output_name(f"{'u2net' if variant == 'full' else 'u2netp'}_{size[0]}x{size[1]}",
                                  target.precision)


def _spec_matches(path: Path, target: Target, ctx: BuildContext) -> bool:
    """What the artifact says it is (its :class:`~u2deploy.artifact.ArtifactSpec`, read through its runner)
    agrees with this build: a file the cache key misses (copied in by hand) is never reused."""
    from ...engines import open_runner

    try:
        with open_runner(str(path)) as runner:
            spec = runner.info.spec
    except U2Error as exc:
        log.info("%s: not reused (%s)", path, exc)
        return False
    return (spec.variant == ctx.variant and spec.input_size == tuple(ctx.size)
            and spec.weights_sha256 == ctx.weights_sha256 and spec.precision == target.precision)


def build(target: Target, ctx: BuildContext, cache: ArtifactCache, source: Built | None,
          say: Callable[[str], None], folder: OutFolder) -> Built:
    """Build ``target`` into ``ctx.out`` from ``source`` (the artifact its row is built from; None for the FP32
    ONNX), or reuse the one there when its key, its bytes and its spec agree; what the stage wrote goes into
    OUT's ledger, whether it finished or not."""
    made = target.fmt.build(target.precision)
    assert made is not None, f"{target.name} is no exported artifact"
    request = ctx.request(target, source.path if source else None)
    plan: stages.StagePlan = getattr(stages, made.stage)(request)
    commands = (*(source.commands if source else ()), plan.command(request))
    output = request.output
    if cache.hit(output, plan.key) and _spec_matches(output, target, ctx):
        say(f"{target.name}: reusing {output} (same source, weights, size and options)")
        return Built(output, True, cache.seconds(output) or 0.0, commands)
    started = time.perf_counter()
    try:
        with stdout_to_stderr():  # NNCF and friends print progress to stdout; stdout carries only the table
            result = plan.build()
        seconds = time.perf_counter() - started
        cache.store(output, plan.key, seconds)
    finally:
        folder.record()
    say(f"{target.name}: {result.status_line()}")
    return Built(output, False, seconds, commands)


def build_rows(rows: Sequence[Row], ctx: BuildContext, folder: OutFolder, say: Callable[[str], None],
               progress: bool) -> None:
    """Build every row that can run here, the FP32 ONNX first; a stage that fails skips its row with the
    reason, except the FP32 ONNX's (the source of every other artifact and the baseline of every ratio)."""
    builder = Builder(ctx, ArtifactCache(ctx.out), folder, say)
    buildable = sorted((r for r in rows if not r.skipped and not r.reference), key=lambda r: r.target_key != BASELINE)
    with tqdm(total=len(buildable), desc="build", unit="artifact", leave=False, disable=not progress) as bar:
        for row in buildable:
            bar.set_postfix_str(row.name)
            target = Target(by_key(row.format), row.precision)
            try:
                built = builder(target)
            except U2Error as exc:
                if target.key == BASELINE:
                    raise
                row.skip(f"{target.fmt.build_command(target.precision)} failed: {exc}")
                say(f"{row.name}: {row.status}")
            else:
                row.build_command = built.command
                row.artifact, row.cached, row.build_seconds = str(built.path), built.cached, built.seconds
            bar.update()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever a stage writes to file descriptor 1 (Python, C++ and rich consoles alike) to stderr."""
    for stream in (sys.stdout, sys.__stdout__):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no file descriptors to redirect (an embedded interpreter): leave stdout alone
        yield
        return
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for stream in (sys.stdout, sys.__stdout__):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved, 1)
        os.close(saved)
