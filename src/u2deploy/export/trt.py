"""Build a TensorRT engine from an ONNX file, or from a variant through the ONNX stages first.

Order of work, chosen so that a machine that cannot build stops before doing anything:

1. check the flags and the destinations: ``-o``'s folder must exist (it is never created), and so
   must ``--timing-cache``'s and ``--calib-cache``'s;
2. probe TensorRT, cuda-python and the GPU (:func:`~u2deploy.engines.trt_compat.probe_environment`);
3. compute the :class:`~u2deploy.export.trt_plan.BuildPlan` for this TensorRT and GPU (flag errors
   stop here too), and choose the verification images (:mod:`u2deploy.validate.verify`: never those
   calibration draws);
4. run the stages the plan lists (ONNX export, FP16 conversion, Q/DQ quantisation) in the engine's
   build folder (:func:`build_folder`), each imported only when it runs and each verified by its own
   stage;
5. parse, configure and build as the plan says, reusing a timing cache across builds;
6. write the engine to a temporary file, run it there against its ONNX (:mod:`.trt_verify`) at its
   precision's bound, and only then rename it and write its JSON manifest beside it: an engine that
   breaks its bound leaves no file (``--no-verify`` skips the check; the manifest says so).

Intermediate files never replace a user's file. They go to ``<engine stem>.build/`` beside the engine,
a folder this command creates with a marker file in it and reuses only when the marker is there; a
folder of that name without it is refused. Names derived from the engine's keep two engines (an FP16
and an INT8 one, or the benchmark's TensorRT stages and its ONNX ones) from writing over each other's
intermediates, and a ``u2netp.onnx`` of the user's beside the engine is never touched; the manifest
lists the folder and the files in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import formats
from ..artifact import ArtifactSpec
from ..engines.trt_compat import TrtEnvironment, cuda_check, probe_environment
from ..engines.trt_manifest import build_manifest, write_manifest
from ..errors import U2Error
from ..files import atomic_path, check_destinations, sha256_of
from ..validate.verify import Verification, choose_verification_images
from .trt_plan import BatchRange, BuildPlan, BuildRequest, SourceModel, describe_onnx, make_plan

log = logging.getLogger(__name__)

VARIANT_FILES = {"full": "u2net", "small": "u2netp"}
_PRECISION_SUFFIX = re.compile(r"(_(fp32|fp16|int8|qdq|int8_trt|int8_qdq|trt))+$")
BUILD_MARKER = ".u2export-trt"  # in a build folder this command made: the only kind it writes into


@dataclass(frozen=True)
class TrtBuildResult:
    engine: Path
    manifest: Path
    plan: BuildPlan
    seconds: float
    size_bytes: int
    tensorrt: str
    gpu: str
    intermediates: tuple[Path, ...] = field(default=())
    verification: Verification | None = None

    def status_line(self) -> str:
        """``built X.engine (3.1 MB) in 41 s · TensorRT 10.9 · RTX 4090 (8.9) · <verification> · next: …``"""
        version = ".".join(self.tensorrt.split(".")[:2])
        checked = f" · {self.verification.summary()}" if self.verification is not None else ""
        return (f"built {self.engine} ({self.size_bytes / 1e6:.1f} MB) in {self.seconds:.0f} s · "
                f"TensorRT {version} · {self.gpu}{checked} · next: u2bench latency --model {self.engine}")


def precision_from_flags(fp16: bool, int8: bool, fp32: bool) -> str:
    chosen = [name for name, on in (("fp16", fp16), ("int8", int8), ("fp32", fp32)) if on]
    if len(chosen) != 1:
        raise U2Error("choose one precision: --fp16, --int8 or --fp32")
    return chosen[0]


def base_name(onnx: Path | None, variant: str | None) -> str:
    """The stem of the intermediate ONNX files: u2netp, u2net, or the ONNX's own without precision suffixes."""
    if variant:
        return VARIANT_FILES[variant]
    assert onnx is not None
    return _PRECISION_SUFFIX.sub("", Path(onnx).stem) or Path(onnx).stem


def default_output(onnx: Path | None, variant: str | None, precision: str) -> Path:
    folder = Path(".") if onnx is None else Path(onnx).parent
    return formats.default_output("trt", precision, folder / base_name(onnx, variant))


def build_folder(engine: Path) -> Path:
    """Where the intermediate ONNX files of ``engine`` go: ``<engine stem>.build/`` beside it."""
    return engine.with_name(f"{engine.stem}.build")


def claim_build_folder(folder: Path, engine: Path) -> None:
    """Make the build folder, or take back one this command made (its marker is there); refuse any other."""
    if folder.exists() or folder.is_symlink():
        if folder.is_dir() and not folder.is_symlink() and (folder / BUILD_MARKER).is_file():
            return
        raise U2Error(f"{folder}: exists and was not made by u2export trt (no {BUILD_MARKER} in it); the "
                      f"intermediate ONNX files of {engine.name} go there: move it away or choose another -o")
    try:
        folder.mkdir()
    except OSError as exc:
        raise U2Error(f"{folder}: cannot make the build folder ({exc.strerror or exc})") from None
    with atomic_path(folder / BUILD_MARKER) as tmp:
        tmp.write_text(f"intermediate files of u2export trt for {engine.name}; safe to delete\n")


def _ranges_cache(folder: Path, source: Path, calib_dir: Path, num: int | None, seed: int) -> Path:
    """The quantize stage's ranges cache, in the build folder, named after what decides the ranges (the
    model's bytes, the images, their number and seed): another calibration gets a file of its own instead
    of a refusal to reuse this one."""
    key = json.dumps([sha256_of(source), str(Path(calib_dir).resolve()), num, seed])
    return folder / f"{source.stem}.{hashlib.sha256(key.encode()).hexdigest()[:12]}.calib.json"


def _as_path(result: Any) -> Path:
    """A stage's output file, whether it returns the path or a result object holding ``.path``."""
    return Path(getattr(result, "path", result))


@dataclass(frozen=True)
class _Calibration:
    """How the INT8 stages draw their images: ``--calib``, ``--calib-images``, ``--calib-seed``."""

    folder: Path | None
    num: int | None
    seed: int


def _run_stages(plan: BuildPlan, *, onnx: Path | None, variant: str | None, weights: str | None,
                batch: BatchRange | None, size: tuple[int, int] | None, calib: _Calibration,
                folder: Path, base: str, verify_images: Path | None,
                no_verify: bool) -> tuple[Path, list[Path]]:
    """Carry out the plan's stages in ``folder``; returns the ONNX to parse and the files made on the way."""
    current = onnx
    made: list[Path] = []
    for stage in plan.stages:
        try:
            if stage == "export_onnx":
                from .onnx import export_onnx

                options: dict[str, Any] = {"dynamic_batch": batch is not None and batch.dynamic}
                if batch is not None and not batch.dynamic and batch.min != 1:
                    options["batch"] = batch.min
                if size is not None:
                    options["size"] = size
                if verify_images is not None:
                    options["verify_images_dir"] = verify_images
                current = _as_path(export_onnx(variant=variant, weights=weights,
                                               output=folder / f"{base}.onnx", **options))
            elif stage == "convert_fp16":
                from .fp16 import convert_fp16_model

                assert current is not None
                current = _as_path(convert_fp16_model(current, folder / f"{base}_fp16.onnx",
                                                      verify_images=verify_images, no_verify=no_verify))
            elif stage == "quantize":
                from ..calibration.quantize import quantize_model

                assert current is not None and calib.folder is not None
                current = _as_path(quantize_model(
                    current, calib.folder, folder / f"{base}_int8_trt.onnx", target="tensorrt",
                    num=calib.num, seed=calib.seed,
                    cache=_ranges_cache(folder, current, calib.folder, calib.num, calib.seed),
                    verify_images=verify_images, no_verify=no_verify))
            else:
                raise AssertionError(stage)
        except ImportError as exc:
            raise U2Error(f"the {stage} stage is not available in this installation ({exc})") from None
        made.append(current)
        log.info("%s: %s", stage, current)
    assert current is not None
    return current, made


def _drawn(plan: BuildPlan, calib: _Calibration, calibrator_files: list[Path]) -> list[Path]:
    """The images calibration reads (the calibrator's, or the quantize stage's): never verified on."""
    if plan.int8_mode == "calibrator":
        return calibrator_files
    if plan.int8_mode == "qdq" and "quantize" in plan.stages and calib.folder is not None:
        from ..calibration.dataset import sample_images

        return sample_images(calib.folder, calib.num, calib.seed)
    return []


def rebuild_command(onnx: Path, plan: BuildPlan, output: Path, request: BuildRequest,
                    timing_cache: Path | None, calib: _Calibration | None = None) -> str:
    """The ``u2export trt`` line that rebuilds this engine from the ONNX it was parsed from."""
    args = ["u2export", "trt", "--onnx", str(onnx), f"--{plan.precision}"]
    if plan.int8_mode == "calibrator":
        args += ["--int8-mode", "calibrator", "--calib", str(request.calib_dir),
                 "--calib-batch", str(request.calib_batch)]
        if calib is not None:
            args += [*(["--calib-images", str(calib.num)] if calib.num is not None else []),
                     "--calib-seed", str(calib.seed)]
    if plan.profile:
        low, opt, high = (plan.profile[k][0] for k in ("min", "opt", "max"))
        args += ["--min-batch", str(low), "--opt-batch", str(opt), "--max-batch", str(high)]
        args += ["--size", f"{plan.input_shape[2]}x{plan.input_shape[3]}"]
    if request.workspace_gib:
        args += ["--workspace", f"{request.workspace_gib:g}"]
    if timing_cache:
        args += ["--timing-cache", str(timing_cache)]
    if request.version_compatible:
        args.append("--version-compatible")
    if request.hardware_compatible:
        args.append("--hardware-compatible")
    return " ".join(shlex.quote(a) for a in args + ["-o", str(output)])


def _check_flags(onnx: Path | None, variant: str | None, precision: str, calib_dir: Path | None, output: Path | None,
                 timing_cache: Path | None, calib_cache: Path | None, verify_images: Path | None) -> Path:
    """Everything about the flags and files that can be refused before TensorRT is probed; the engine's path."""
    if (onnx is None) == (variant is None):
        raise U2Error("give either --onnx MODEL.onnx or --variant full|small")
    if variant is not None and variant not in VARIANT_FILES:
        raise U2Error(f"--variant {variant}: expected full or small")
    if onnx is not None and not Path(onnx).is_file():
        raise U2Error(f"{onnx}: no such ONNX file")
    if calib_dir is not None and not Path(calib_dir).is_dir():
        raise U2Error(f"--calib {calib_dir}: no such folder")
    if verify_images is not None and not Path(verify_images).is_dir():
        raise U2Error(f"--verify-images {verify_images}: no such folder")
    output = Path(output) if output else default_output(onnx, variant, precision)
    if output.suffix != ".engine":
        raise U2Error(f"-o {output}: TensorRT engines are written as .engine files")
    check_destinations(output, timing_cache, calib_cache)  # their folders exist and take a new file
    return output


def build_trt_engine(*, onnx: Path | None = None, variant: str | None = None, weights: str | None = None,
                     precision: str, batch: BatchRange | None = None, size: tuple[int, int] | None = None,
                     workspace_gib: float | None = None, timing_cache: Path | None = None,
                     output: Path | None = None, calib_dir: Path | None = None,
                     calib_images: int | None = None, calib_batch: int = 8, calib_seed: int = 0,
                     calib_cache: Path | None = None, int8_mode: str = "auto",
                     version_compatible: bool = False, hardware_compatible: bool = False,
                     device: int = 0, verbose: bool = False, verify_images: Path | None = None,
                     no_verify: bool = False) -> TrtBuildResult:
    """Build ``output`` (default ``<u2netp|u2net|onnx stem>_<precision>.engine``), verify it, write it and its
    manifest; a U2Error line, and no engine, when a step fails or the engine breaks its precision's bound.

    ``calib_images``: images drawn from ``calib_dir`` with ``calib_seed`` (default: all of them for the
    implicit calibrator, 300 for the Q/DQ ONNX, as ``u2export quantize``).
    """
    verify_images = Path(verify_images) if verify_images is not None else None
    output = _check_flags(onnx, variant, precision, calib_dir, output, timing_cache, calib_cache, verify_images)

    started = time.perf_counter()
    env = probe_environment(device, "TensorRT engines")  # before any stage runs
    request = BuildRequest(precision=precision, batch=batch, size=size, workspace_gib=workspace_gib,
                           int8_mode=int8_mode, calib_dir=calib_dir, calib_batch=calib_batch,
                           version_compatible=version_compatible, hardware_compatible=hardware_compatible)
    if onnx is not None:
        source = describe_onnx(Path(onnx))
    else:
        fixed = 1 if batch is None else (None if batch.dynamic else batch.min)
        source = SourceModel(kind="fp32", batch=fixed, size=size)
    plan = _plan(env, request, source)
    for warning in plan.warnings:
        log.warning("warning: %s", warning)
    calibrator_info = None
    calib_files: list[Path] = []
    if plan.int8_mode == "calibrator":  # read the calibration set before the (slow) stages run
        from .trt_calib import sample_images

        assert calib_dir is not None
        calib = _Calibration(Path(calib_dir), calib_images, calib_seed)
        calib_files = sample_images(calib_dir, calib_images, calib_seed)
        calib_cache = calib_cache or output.with_name(output.stem + ".calib.cache")
        calibrator_info = {"mode": "calibrator", "dir": str(calib_dir), "images": len(calib_files),
                           "seed": calib_seed, "batch_shape": None, "cache": str(calib_cache),
                           "algorithm": "entropy2"}
    else:
        from ..calibration.dataset import DEFAULT_NUM

        calib = _Calibration(Path(calib_dir) if calib_dir else None,
                             calib_images if calib_images is not None else DEFAULT_NUM, calib_seed)
    images = None if no_verify else choose_verification_images(verify_images, calib.folder,
                                                                _drawn(plan, calib, calib_files))

    folder = build_folder(output)
    if plan.stages:
        claim_build_folder(folder, output)
    parsed, made = _run_stages(plan, onnx=Path(onnx) if onnx else None, variant=variant, weights=weights,
                               batch=batch, size=size, calib=calib, folder=folder,
                               base=base_name(onnx, variant), verify_images=verify_images, no_verify=no_verify)
    if plan.stages:  # the final plan is made from the file the parser will actually read
        plan = _plan(env, request, describe_onnx(parsed))
        if plan.stages:
            raise U2Error(f"{parsed}: the {' and '.join(plan.stages)} stage left an ONNX that still needs it")
    final_source = describe_onnx(parsed)
    if calibrator_info is not None:
        calibrator_info["batch_shape"] = list(plan.calibration_shape or ())
    elif made and plan.int8_mode == "qdq":
        calibrator_info = {"mode": "qdq", "dir": str(calib.folder), "images": calib.num, "seed": calib.seed,
                           "method": "minmax", "quantized_onnx": str(parsed)}
    reference = Path(onnx) if onnx is not None else made[0]  # the ONNX the chain started from

    start = time.perf_counter()
    built = _build(env, plan, parsed, final_source, timing_cache=timing_cache, calib_files=calib_files,
                   calib_cache=calib_cache, verbose=verbose)
    seconds = time.perf_counter() - start
    intermediates = ({"folder": str(folder), "files": [str(p) for p in made]} if made else None)
    with atomic_path(output) as tmp:
        tmp.write_bytes(built.serialized)
        manifest = build_manifest(
            engine=tmp, name=output.name, tensorrt_version=str(env.trt.__version__), gpu=env.gpu,
            precision=precision, plan=plan.as_dict(), input_name=built.input_name,
            output_names=built.output_names, source_onnx=parsed, onnx_metadata=final_source.metadata,
            build_seconds=seconds, calibration=calibrator_info, intermediates=intermediates,
            rebuild=rebuild_command(parsed, plan, output, request, timing_cache, calib), timing_cache=timing_cache)
        if images is None:
            verification = Verification.skip(output.name, reference.name, precision)
        else:
            from .trt_verify import verify_engine

            verification = verify_engine(env, tmp, manifest, name=output.name, reference=reference,
                                         reference_kind=describe_onnx(reference).kind, precision=precision,
                                         size=(plan.input_shape[2], plan.input_shape[3]), images=images)
            if not verification.passed:
                if built.calib_cache_written and calib_cache is not None:
                    calib_cache.unlink(missing_ok=True)  # these scales made an engine that fails: not reused
                verification.raise_if_failed(output)
        manifest["verification"] = verification.to_manifest()
    manifest_file = write_manifest(output, manifest)
    log.info("%s", verification.summary())
    return TrtBuildResult(engine=output, manifest=manifest_file, plan=plan,
                          seconds=time.perf_counter() - started, size_bytes=output.stat().st_size,
                          tensorrt=str(env.trt.__version__), gpu=str(env.gpu), intermediates=tuple(made),
                          verification=verification)


def _plan(env: TrtEnvironment, request: BuildRequest, source: SourceModel) -> BuildPlan:
    return make_plan(env.version, request, source, env.gpu.compute_capability, env.gpu.name)


@dataclass(frozen=True)
class _Built:
    serialized: Any  # IHostMemory (a buffer)
    input_name: str
    output_names: list[str]
    calib_cache_written: bool  # the calibrator wrote new scales this time


def _build(env: TrtEnvironment, plan: BuildPlan, onnx: Path, source: SourceModel, *,
           timing_cache: Path | None, calib_files: list[Path], calib_cache: Path | None,
           verbose: bool) -> _Built:
    """Parse ``onnx`` and build as ``plan`` says (nothing is written but the timing and calibration caches)."""
    trt = env.trt
    cuda_check(env.cudart.cudaSetDevice(env.gpu.index), "cudaSetDevice")  # the builder uses the current GPU
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0].strip().splitlines()[0][:200] if errors else "no error reported"
        raise U2Error(f"{onnx}: TensorRT {plan.tensorrt} cannot parse it: {first}{more}")
    if network.num_inputs != 1:
        raise U2Error(f"{onnx}: expected one network input, TensorRT sees {network.num_inputs}")
    input_name = network.get_input(0).name
    output_names = [network.get_output(i).name for i in range(network.num_outputs)]

    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, plan.profiling_verbosity)
    if plan.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if plan.hardware_compatibility != "NONE":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                      plan.hardware_compatibility)
    if plan.profile:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, plan.profile["min"], plan.profile["opt"], plan.profile["max"])
        config.add_optimization_profile(profile)
    if timing_cache is not None:
        _use_timing_cache(config, timing_cache)

    calibrator = None
    if plan.int8_mode == "calibrator":
        from . import trt_calib

        shape = plan.calibration_shape
        assert shape is not None
        spec = ArtifactSpec.from_metadata(source.metadata, source.label)
        mean, std = spec.mean, spec.std
        calibrator = trt_calib.make_entropy_calibrator(
            trt, env.cudart, lambda: trt_calib.calibration_batches(calib_files, shape, mean, std), shape,
            calib_cache)
        config.int8_calibrator = calibrator
        if plan.profile:  # the calibrator's batches have their own fixed shape
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(input_name, shape, shape, shape)
            config.set_calibration_profile(calib_profile)

    log.info("building %s (%s, TensorRT %s) — this takes a while", onnx.name, plan.precision, plan.tensorrt)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if calibrator is not None and calibrator.error is not None:
        calibrator.discard_cache()
        if isinstance(calibrator.error, U2Error):
            raise calibrator.error
        raise U2Error(f"INT8 calibration failed: {calibrator.error}") from None
    if serialized is None:
        raise U2Error(f"TensorRT {plan.tensorrt} could not build {onnx.name} as {plan.precision} "
                      "(its messages above say why)")
    if timing_cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return _Built(serialized, input_name, output_names, bool(calibrator is not None and calibrator.cache_written))


def _use_timing_cache(config: Any, path: Path) -> None:
    """Start from the cache file when there is one; a cache from another TensorRT or GPU is set aside."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        log.warning("warning: %s was made by another TensorRT or GPU; starting a new timing cache", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)
