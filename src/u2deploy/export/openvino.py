"""FP32 ONNX → OpenVINO IR (``.xml`` + ``.bin``): FP32, FP16-compressed weights, or INT8 through NNCF.

``ov.save_model`` compresses weights to FP16 unless told not to; here FP32 stays FP32 unless
``fp16`` is asked for. INT8 is NNCF's post-training quantization on the same calibration set, with
the same seeded sampling, as ``u2export quantize`` (:mod:`u2deploy.calibration.dataset`); NNCF
applies its own overflow fix for x86 CPUs without VNNI. Every IR is verified against the FP32 ONNX
in ONNX Runtime on a few calibration or verification images (FP32 within the table's max|Δ|),
written atomically (the pair appears complete or not at all), with its spec in ``rt_info`` and a
JSON manifest beside it.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, hardware
from ..artifact import ArtifactSpec
from ..calibration.dataset import DEFAULT_CALIB_DIR, DEFAULT_NUM, calibration_set, input_spec
from ..calibration.quantize import head_nodes, load_source
from ..engines.openvino import RT_INFO_KEY, OpenVinoRunner
from ..engines.ort import cpu_session, run_first_output
from ..errors import U2Error
from ..files import check_writable, human_size, write_json
from ..validate import Comparison, compare_maps, tolerance_for


@dataclass
class OpenVinoResult:
    path: Path
    precision: str
    seconds: float
    size_bytes: int
    vs_fp32: Comparison
    source: Path

    def status_line(self) -> str:
        return (f"converted {self.path} (+ .bin, {human_size(self.size_bytes)}) in {self.seconds:.0f} s · OpenVINO "
                f"{self.precision} · vs FP32 ONNX max|Δ| {self.vs_fp32.max_abs:.2g}, mean|Δ| "
                f"{self.vs_fp32.mean_abs:.2g} · next: u2bench latency --model {self.source} --model {self.path} "
                "--paired")


def default_output(source: Path, precision: str) -> Path:
    return source.with_name(f"{source.stem}{'' if precision == 'fp32' else '_' + precision}_openvino.xml")


def export_openvino(onnx_path: str | Path, output: str | Path | None = None, *, int8: bool = False,
                    fp16: bool = False, calib_dir: str | Path | None = None, num: int | None = DEFAULT_NUM,
                    seed: int = 0, n_verify: int = 4) -> OpenVinoResult:
    """The whole OpenVINO stage; raises :class:`U2Error` and leaves no file when a step fails."""
    try:
        import openvino as ov
    except ImportError:
        raise U2Error("u2export openvino needs OpenVINO: pip install 'u2deploy[openvino]'") from None
    started = time.perf_counter()
    if int8 and fp16:
        raise U2Error("--int8 and --fp16: choose one (INT8 keeps its float parts in FP32)")
    source = Path(onnx_path)
    model_proto = load_source(source, verb="convert")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    output = Path(output) if output is not None else default_output(source, precision)
    if output.suffix != ".xml":
        raise U2Error(f"-o {output}: an OpenVINO IR is named NAME.xml (its weights go to NAME.bin)")
    check_writable(output)
    spec = input_spec(model_proto, source)
    calib = calibration_set(calib_dir if calib_dir is not None else DEFAULT_CALIB_DIR, spec, num, seed) \
        if int8 or calib_dir is not None else None
    ov_model = ov.convert_model(str(source))
    if int8:
        ov_model = _quantize(ov_model, calib, head_nodes(model_proto))
    source_spec = ArtifactSpec.from_metadata({p.key: p.value for p in model_proto.metadata_props}, str(source))
    extra = {"converter": f"openvino {ov.__version__}", "u2deploy_version": __version__,
             "built_on_cpu": hardware.isa_line()}
    if calib is not None and int8:
        extra["calibration"] = f"nncf.quantize,images={len(calib.files)},seed={seed},folder={calib.folder}"
    metadata = source_spec.evolve(precision=precision, quant_target="cpu" if int8 else None, extra=extra).to_metadata()
    for key, value in metadata.items():
        ov_model.set_rt_info(value, [RT_INFO_KEY, key])
    with tempfile.TemporaryDirectory(prefix=f".{output.stem}.", dir=output.parent) as tmp_dir:
        staged = Path(tmp_dir) / output.name
        ov.save_model(ov_model, str(staged), compress_to_fp16=fp16)
        vs_fp32 = _verify(source, staged, calib, spec, n_verify, precision)
        os.replace(staged.with_suffix(".bin"), output.with_suffix(".bin"))  # weights first: the xml names them
        os.replace(staged, output)
    size_bytes = output.stat().st_size + output.with_suffix(".bin").stat().st_size
    write_json(Path(f"{output}.json"), {
        **metadata, "file": output.name, "weights_file": output.with_suffix(".bin").name, "size_bytes": size_bytes,
        "source": str(source), "verification_vs_fp32_onnx": {"max_abs": vs_fp32.max_abs, "mean_abs": vs_fp32.mean_abs,
                                                             "images": vs_fp32.n_maps},
        "built_on": hardware.build_host()})
    return OpenVinoResult(output, precision, time.perf_counter() - started, size_bytes, vs_fp32, source)


def _quantize(ov_model, calib, float_nodes: list[str]):
    """NNCF post-training quantization on every calibration image; the head stays float, as in
    ``u2export quantize`` (its int8 rounding shows in the map directly, for no speed)."""
    import nncf

    batches = list(calib.batches(1))
    try:
        return nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches),
                             # OpenVINO splits an ONNX Conv into "<name>/WithoutBiases" and the bias Add "<name>"
                             ignored_scope=nncf.IgnoredScope(patterns=[
                                 re.escape(n) + "(/WithoutBiases)?" for n in float_nodes], validate=False))
    except Exception as exc:  # NNCF raises its own and OpenVINO's exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise U2Error(f"NNCF's quantizer failed ({first}); nothing written") from None


def _verify(source: Path, ir: Path, calib, spec, n: int, precision: str) -> Comparison:
    """The IR against the FP32 ONNX in ONNX Runtime; FP32 within the table's max|Δ|, every IR finite."""
    from ..data import preprocess
    from ..data.images import read_image
    from ..data.samples import verification_images

    if calib is not None:
        images = [read_image(p) for p in calib.files[:: max(1, len(calib.files) // n)][:n]]
    else:
        images, _ = verification_images(n)
    x = preprocess.fast(images, spec.size, spec.mean, spec.std)
    with OpenVinoRunner.open(str(ir)) as runner:
        got = np.concatenate([runner.saliency(x[i:i + 1]) for i in range(len(x))])
    bound = tolerance_for(precision).max_abs
    comparison = compare_maps(got, run_first_output(cpu_session(source), x), bound)
    if comparison.nonfinite:
        raise U2Error(f"{ir.name}: OpenVINO outputs {comparison.nonfinite} NaN/Inf values; nothing written")
    if bound is not None and not comparison.passed:
        raise U2Error(f"{ir.name}: OpenVINO disagrees with the FP32 ONNX: {comparison.summary()}; nothing written")
    return comparison
