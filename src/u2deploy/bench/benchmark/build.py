"""Build each artifact into ``--out`` through the same library call as its ``u2export`` command, or reuse
the one already there (:mod:`.cache`), and record the command that rebuilds it.

There is no second code path: ONNX FP32 is :func:`~u2deploy.export.onnx.export_onnx`, and every other
artifact is built from that file by its stage (:func:`~u2deploy.export.fp16.convert_fp16_model`,
:func:`~u2deploy.calibration.quantize.quantize_model`, :func:`~u2deploy.export.openvino.export_openvino`,
:func:`~u2deploy.export.trt.build_trt_engine`). INT8 calibration ranges are the quantize stage's own
cache (``MODEL.calib.json``), reused on its own terms.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ... import hardware
from ...errors import U2Error
from ...files import sha256_of
from ...formats import by_key
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


@dataclass(frozen=True)
class Stage:
    """One artifact's cache key, the export call that builds it, and its ``u2export`` command."""

    key: dict[str, Any]
    build: Callable[[], Any]
    command: str


@dataclass(frozen=True)
class Built:
    path: Path
    cached: bool
    seconds: float
    command: str


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
    base = f"{'u2net' if variant == 'full' else 'u2netp'}_{size[0]}x{size[1]}"
    key, p = target.key
    if key == "onnx":
        return out / (f"{base}.onnx" if p == "fp32" else f"{base}_{p}.onnx")
    if key == "openvino":
        return out / f"{base}{'' if p == 'fp32' else '_' + p}_openvino.xml"
    return out / f"{base}_{p}{target.fmt.suffix}"


def _command(target: Target, source: list[str], extra: list[str]) -> str:
    """The format table's build command for ``target``, with the source and options of this build."""
    tokens = shlex.split(target.fmt.build_command(target.precision) or "")
    return shlex.join([*tokens[:2], *source, *tokens[2:], *extra])


def _onnx_fp32(target: Target, ctx: BuildContext, output: Path) -> Stage:
    from ...export.onnx import export_onnx

    extra = ["--variant", ctx.variant, *(["--weights", str(ctx.weights)] if ctx.weights else []),
             "--size", f"{ctx.size[0]}x{ctx.size[1]}", "-o", str(output)]
    return Stage({"stage": "onnx", "variant": ctx.variant, "weights_sha256": ctx.weights_sha256,
                  "size": list(ctx.size), "batch": 1, "opset": 17},
                 lambda: export_onnx(ctx.variant, ctx.weights, output, size=ctx.size), _command(target, [], extra))


def _derived(target: Target, ctx: BuildContext, output: Path, source: Path) -> Stage:
    """A stage that builds from the FP32 ONNX file."""
    key, precision = target.key
    base = {"stage": f"{key}:{precision}", "source_sha256": sha256_of(source)}
    calib = [str(ctx.calib_dir)] if ctx.calib_dir is not None else []
    int8 = precision == "int8"
    sampled = {"calib_images": ctx.calib_digest, "num": ctx.calib_num, "seed": ctx.seed} if int8 else {}
    sample_flags = ["--calib", *calib, "--num", str(ctx.calib_num), "--seed", str(ctx.seed)] if int8 else []
    src = [str(source)]
    if key == "onnx" and precision == "fp16":
        from ...export.fp16 import convert_fp16_model

        return Stage({**base, "calib_images": ctx.calib_all_digest},
                     lambda: convert_fp16_model(source, output, calib_dir=ctx.calib_dir),
                     _command(target, src, [*(["--calib", *calib] if calib else []), "-o", str(output)]))
    if key == "onnx" and int8:
        from ...calibration.quantize import quantize_model

        return Stage({**base, **sampled, "method": "minmax"},
                     lambda: quantize_model(source, ctx.calib_dir, output, target="cpu", num=ctx.calib_num,
                                            seed=ctx.seed),
                     _command(target, src, [*sample_flags, "-o", str(output)]))
    if key == "openvino":
        from ...export.openvino import export_openvino

        # NNCF calibrates like u2export quantize (min-max ranges, no bias correction) since its fix: an IR
        # calibrated before it carries no such key and is rebuilt
        method = {"calibration": "nncf minmax, no bias correction"} if int8 else {}
        return Stage({**base, **sampled, **method},
                     lambda: export_openvino(source, output, int8=int8, fp16=precision == "fp16",
                                             calib_dir=ctx.calib_dir if int8 else None, num=ctx.calib_num,
                                             seed=ctx.seed),
                     _command(target, src, [*sample_flags, "-o", str(output)]))
    if key == "trt":
        from ...export.trt import build_trt_engine

        flags = ["--calib", *calib, "--calib-images", str(ctx.calib_num), "--calib-seed", str(ctx.seed)] if int8 else []
        return Stage({**base, **sampled, "gpu": (hardware.gpu() or {}).get("name"),
                      "tensorrt": hardware.software().get("tensorrt")},
                     lambda: build_trt_engine(onnx=source, precision=precision, output=output,
                                              calib_dir=ctx.calib_dir if int8 else None,
                                              calib_images=ctx.calib_num if int8 else None, calib_seed=ctx.seed),
                     _command(target, ["--onnx", str(source)], [*flags, "-o", str(output)]))
    raise U2Error(f"--formats {target.name}: u2bench benchmark has no build stage for it yet")


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


def build(target: Target, ctx: BuildContext, cache: ArtifactCache, source: Path | None,
          say: Callable[[str], None], folder: OutFolder) -> Built:
    """Build ``target`` into ``ctx.out`` from ``source`` (the FP32 ONNX; None for that file itself), or reuse
    the one there when its key, its bytes and its spec agree; what the stage wrote goes into OUT's ledger,
    whether it finished or not."""
    output = artifact_path(ctx.out, ctx.variant, ctx.size, target)
    if target.key == BASELINE:
        stage = _onnx_fp32(target, ctx, output)
    else:
        assert source is not None, "the FP32 ONNX is built first"
        stage = _derived(target, ctx, output, source)
    if cache.hit(output, stage.key) and _spec_matches(output, target, ctx):
        say(f"{target.name}: reusing {output} (same source, weights, size and options)")
        return Built(output, True, cache.seconds(output) or 0.0, stage.command)
    started = time.perf_counter()
    try:
        with stdout_to_stderr():  # NNCF and friends print progress to stdout; stdout carries only the table
            result = stage.build()
        seconds = time.perf_counter() - started
        cache.store(output, stage.key, seconds)
    finally:
        folder.record()
    say(f"{target.name}: {result.status_line()}")
    return Built(output, False, seconds, stage.command)


def build_rows(rows: Sequence[Row], ctx: BuildContext, folder: OutFolder, say: Callable[[str], None],
               progress: bool) -> None:
    """Build every row that can run here, the FP32 ONNX first; a stage that fails skips its row with the
    reason, except the FP32 ONNX's (the source of every other artifact and the baseline of every ratio)."""
    cache = ArtifactCache(ctx.out)
    buildable = sorted((r for r in rows if not r.skipped and not r.reference), key=lambda r: r.target_key != BASELINE)
    fp32: Built | None = None
    with tqdm(total=len(buildable), desc="build", unit="artifact", leave=False, disable=not progress) as bar:
        for row in buildable:
            bar.set_postfix_str(row.name)
            target = Target(by_key(row.format), row.precision)
            try:
                built = build(target, ctx, cache, fp32.path if fp32 else None, say, folder)
            except U2Error as exc:
                if target.key == BASELINE:
                    raise
                row.skip(f"{target.fmt.build_command(target.precision)} failed: {exc}")
                say(f"{row.name}: {row.status}")
            else:
                if target.key == BASELINE:
                    fp32, row.build_command = built, built.command
                else:
                    assert fp32 is not None
                    row.build_command = f"{fp32.command} && {built.command}"
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
