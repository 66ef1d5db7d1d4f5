"""ONNX → OpenVINO IR (``.xml`` + ``.bin``): FP32, FP16-compressed weights, INT8 through NNCF, or the
project's own INT8 (a ``u2export quantize --target cpu`` Q/DQ ONNX, converted as it is).

``ov.save_model`` compresses weights to FP16 unless told not to; here FP32 stays FP32 unless
``fp16`` is asked for. INT8 is NNCF's post-training quantization on the same calibration set, with
the same seeded sampling and the same min-max statistic, as ``u2export quantize``
(:mod:`u2deploy.calibration.dataset`); NNCF applies its own overflow fix for x86 CPUs without VNNI.
A Q/DQ ONNX keeps its own calibration: OpenVINO fuses its Q/DQ pairs into int8 kernels. Every IR is
verified against its source ONNX in ONNX Runtime (:mod:`u2deploy.validate.verify`: on images NNCF did
not calibrate on, at the map bounds of the IR's precision) before it is moved into place, written
atomically (the pair appears complete or not at all, or not at all when a bound is broken), with its
spec in ``rt_info`` and a JSON manifest beside it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

from .. import __version__, formats, hardware
from ..artifact import ArtifactSpec
from ..calibration.dataset import DEFAULT_CALIB_DIR, DEFAULT_NUM, calibration_set, input_spec
from ..calibration.qdq_rules import quantized_nodes
from ..calibration.quantize import head_nodes, load_source
from ..engines.openvino import RT_INFO_KEY, OpenVinoRunner
from ..errors import U2Error
from ..files import check_writable, human_size, write_json
from ..onnx_file import load_onnx
from ..ort_session import cpu_session, run_first_output
from ..validate.verify import DEFAULT_N, Verification, VerificationImages, choose_verification_images, verify


@dataclass
class OpenVinoResult:
    path: Path
    precision: str
    seconds: float
    size_bytes: int
    verification: Verification
    source: Path

    def status_line(self) -> str:
        v = self.verification
        checked = (f"not verified ({v.skipped})" if v.skipped else
                   f"vs {self.source.name} on {v.images.description if v.images else '?'}: {v.measured()} "
                   f"({v.bound.describe().removeprefix('the ')})")
        return (f"converted {self.path} (+ .bin, {human_size(self.size_bytes)}) in {self.seconds:.0f} s · OpenVINO "
                f"{self.precision} · {checked} · next: u2bench latency --model {self.source} --model {self.path} "
                "--paired")


def default_output(source: Path, precision: str) -> Path:
    return formats.default_output("openvino", precision, source)


def export_openvino(onnx_path: str | Path, output: str | Path | None = None, *, int8: bool = False,
                    fp16: bool = False, calib_dir: str | Path | None = None, num: int | None = DEFAULT_NUM,
                    seed: int = 0, n_verify: int = DEFAULT_N, verify_images: str | Path | None = None,
                    no_verify: bool = False) -> OpenVinoResult:
    """The whole OpenVINO stage; raises :class:`U2Error` and leaves no file when a step fails or the IR
    breaks its precision's bound against the source ONNX (unless ``no_verify``).

    ``--calib`` without ``--int8`` calibrates nothing: its images may then serve as verification images.
    """
    try:
        import openvino as ov
    except ImportError:
        raise U2Error("u2export openvino needs OpenVINO: pip install -e '.[openvino]'") from None
    started = time.perf_counter()
    if int8 and fp16:
        raise U2Error("--int8 and --fp16: choose one (INT8 keeps its float parts in FP32)")
    source = Path(onnx_path)
    model_proto = _load(source, int8, fp16)
    qdq = bool(quantized_nodes(model_proto))  # the project's own INT8 (u2export quantize): converted as it is
    precision = "int8" if int8 or qdq else "fp16" if fp16 else "fp32"
    output = Path(output) if output is not None else default_output(source, precision)
    if output.suffix != ".xml":
        raise U2Error(f"-o {output}: an OpenVINO IR is named NAME.xml (its weights go to NAME.bin)")
    check_writable(output)
    spec = input_spec(model_proto, source)
    calib = calibration_set(calib_dir if calib_dir is not None else DEFAULT_CALIB_DIR, spec, num, seed) \
        if int8 or calib_dir is not None else None
    if qdq and calib_dir is not None:
        raise U2Error(f"--calib: {source} is already calibrated (Q/DQ); convert it without --calib")
    images = None if no_verify else choose_verification_images(
        Path(verify_images) if verify_images is not None else None, calib.folder if calib else None,
        calib.files if calib is not None and int8 else (), n_verify)
    # A Q/DQ graph is read as OpenVINO's ONNX frontend reads it (what `--backend openvino` runs), not through
    # convert_model: its offline transformations fold the dequantization constants, and on AVX2-only CPUs the
    # folded FakeQuantize ranges round a few activations to the neighbouring int8 value (see _read_qdq).
    ov_model = _read_qdq(ov, source) if qdq else ov.convert_model(str(source))
    if int8:
        ov_model = _quantize(ov_model, calib, head_nodes(model_proto))
    source_spec = ArtifactSpec.from_metadata({p.key: p.value for p in model_proto.metadata_props}, str(source))
    extra = {"converter": f"openvino {ov.__version__}", "u2deploy_version": __version__,
             "built_on_cpu": hardware.isa_line()}
    if calib is not None and int8:
        extra["calibration"] = ("nncf.quantize,activations=minmax,bias_correction=none,"
                                f"images={len(calib.files)},seed={seed},folder={calib.folder}")
    if qdq:
        extra["converted_from"] = f"Q/DQ ONNX {source.name}"
    metadata = source_spec.evolve(precision=precision, quant_target="cpu" if precision == "int8" else None,
                                  extra=extra).to_metadata()
    for key, value in metadata.items():
        ov_model.set_rt_info(value, [RT_INFO_KEY, key])
    with tempfile.TemporaryDirectory(prefix=f".{output.stem}.", dir=output.parent) as tmp_dir:
        staged = Path(tmp_dir) / output.name
        ov.save_model(ov_model, str(staged), compress_to_fp16=fp16)
        verification = _verify(source, staged, output.name, images, spec, precision, source_spec.precision)
        verification.raise_if_failed(output)
        os.replace(staged.with_suffix(".bin"), output.with_suffix(".bin"))  # weights first: the xml names them
        os.replace(staged, output)
    size_bytes = output.stat().st_size + output.with_suffix(".bin").stat().st_size
    write_json(Path(f"{output}.json"), {
        **metadata, "file": output.name, "weights_file": output.with_suffix(".bin").name, "size_bytes": size_bytes,
        "source": str(source), "verification": verification.to_manifest(),
        "built_on": hardware.build_host()})
    return OpenVinoResult(output, precision, time.perf_counter() - started, size_bytes, verification, source)


def _load(source: Path, int8: bool, fp16: bool) -> onnx.ModelProto:
    """An FP32 ONNX, or a Q/DQ one from ``u2export quantize`` (whose Q/DQ OpenVINO runs as int8 kernels)."""
    try:
        return load_source(source, verb="convert")
    except U2Error as exc:
        if "already quantized" not in str(exc):
            raise
    if int8 or fp16:
        raise U2Error(f"{source}: already INT8 (Q/DQ); convert it without --int8 or --fp16")
    model = load_onnx(source)
    if ArtifactSpec.from_metadata({p.key: p.value for p in model.metadata_props}, str(source)).quant_target != "cpu":
        raise U2Error(f"{source}: a --target tensorrt Q/DQ graph; for OpenVINO quantize with --target cpu")
    return model


def _read_qdq(ov, source: Path):
    """The Q/DQ ONNX as ``Core.read_model`` builds it, so that the IR and the ONNX computed directly are one graph.

    ``ov.convert_model`` also runs the offline (MOC) transformations, which fold each DequantizeLinear's
    scale and zero point into the FakeQuantize ranges in float32. The CPU plugin derives the same ranges
    from the unfolded graph with other float32 roundings (the input's dequantized values differ by
    ≤ 5e-7). With an int8 dot product (VNNI) both lower to the same integers; on an AVX2-only Zen 3 the
    first convolution already quantizes one activation to the neighbouring level, and a random-weight
    64×64 U²-Net† then differs by max 0.034 between the two routes. Neither route is the more accurate
    (both are within INT8 parity of PyTorch on held-out ECSSD); reading the graph unfolded makes the IR
    compute exactly what ``--backend openvino`` computes on the ONNX, on every CPU.
    """
    return ov.Core().read_model(str(source))


def _quantize(ov_model, calib, float_nodes: list[str]):
    """NNCF post-training quantization on every calibration image, set up as ``u2export quantize`` is: activation
    ranges from the global min and max (NNCF averages per-image ranges by default), no bias correction, the
    head float (its int8 rounding shows in the map directly, for no speed).

    Measured at 160×160 on 60 held-out images (docs/openvino.md): map mean|Δ| vs PyTorch 0.0164 with NNCF's
    defaults, 0.0138 with min-max ranges, 0.0030 with min-max and no bias correction (NNCF's fast bias
    correction shifts this network's maps: ΔMAE +0.006); full bias correction gives 0.0030 too, 9× slower.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    batches = list(calib.batches(1))
    like_quantize = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX, disable_bias_correction=True)
    try:
        with _nncf_warnings_only(nncf.nncf_logger):
            return nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches),
                                 advanced_parameters=like_quantize,
                                 # OpenVINO splits an ONNX Conv into "<name>/WithoutBiases" and the bias Add "<name>"
                                 ignored_scope=nncf.IgnoredScope(patterns=[
                                     re.escape(n) + "(/WithoutBiases)?" for n in float_nodes], validate=False))
    except Exception as exc:  # NNCF raises its own and OpenVINO's exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise U2Error(f"NNCF's quantizer failed ({first}); nothing written") from None


@contextmanager
def _nncf_warnings_only(nncf_logger: logging.Logger) -> Iterator[None]:
    """NNCF logs its steps at INFO on stdout through its own handler, inside our output; warnings still show."""
    saved = [(nncf_logger, nncf_logger.level), *((h, h.level) for h in nncf_logger.handlers)]
    for item, level in saved:
        item.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        for item, level in saved:
            item.setLevel(level)


def _verify(source: Path, ir: Path, name: str, images: VerificationImages | None, spec, precision: str,
            source_precision: str) -> Verification:
    """The IR in OpenVINO against its source ONNX in ONNX Runtime, at the map bounds of the IR's precision."""
    candidate, reference = f"{name} (openvino cpu)", f"{source.name} ({source_precision}, onnxruntime cpu)"
    if images is None:
        verification = Verification.skip(candidate, reference, precision)
    else:
        x = images.inputs(spec.size, spec.mean, spec.std)
        with OpenVinoRunner.open(str(ir)) as runner:
            verification = verify(runner, lambda b: run_first_output(cpu_session(source), b), x, precision,
                                  images=images, candidate_name=candidate, reference_name=reference)
    return replace(verification, notes={"reference_precision": source_precision})
