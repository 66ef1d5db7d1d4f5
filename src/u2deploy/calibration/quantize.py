"""FP32 ONNX → calibrated INT8 Q/DQ ONNX, for ONNX Runtime on x86 CPUs or for TensorRT.

Both targets go through ONNX Runtime's static quantizer (``quantize_static``) with ranges from
:mod:`.calibrate`, but want different graphs:

``cpu``: ONNX Runtime fuses DequantizeLinear→op→QuantizeLinear into its integer kernels
(QLinearConv, QLinearAdd, QLinearConcat, uint8 NHWC MaxPool). Every float island between two
quantized convolutions costs a dequantize and a requantize pass over a full feature map, so the
recipe quantizes every op U²-Net has (Conv, Relu, MaxPool, Resize, Concat, Add): uint8 activations
(asymmetric, so ReLU folds into the zero point) and int8 symmetric per-channel weights, the U8S8
form MLAS's VNNI kernels take. Only the head (the last 1×1 fusion conv and the Sigmoid) stays
float. Two exact rewrites from :mod:`.rewrites` then put every conv on MLAS's fast symmetric kernel
and give every Concat one scale; after quantizing, :mod:`.qdq_rewrites` makes each Concat one of
integers (ONNX Runtime's plain Concat, which uses every thread) and the fusion conv a weighted sum.
Measured on this machine (AVX-512 VNNI, ORT 1.32, 320×320, INT8/FP32 time in one interleaved run,
``tools/int8_speed.py``): U²-Net† at 1 thread, plain recipe 0.35×, channels padded 0.32×, + shared
concat ranges 0.31×, + one-output convs factored 0.30×, + integer concats and weighted sum 0.30×;
at 2 threads 0.39× → 0.315×; full U²-Net 0.30× → 0.27× (1 thread), 0.33× → 0.29× (2). What
stays above the convs' own 0.25-0.28× is ONNX Runtime's float NHWC Resize with its Q/DQ (~15 ms of
U²-Net†'s 122 ms at 1 thread, more than FP32's whole Upsample), the Concat copies and MaxPool.
Tried and no faster: QOperator instead of QDQ (same kernels), per-tensor weights, Resize left
unquantized, bilinear Resize on uint8 (ORT only drops Q/DQ around *nearest* Resize; its uint8
linear kernel is 2.8× slower than float), side convs or the first conv kept in float, asymmetric
weights (im2col + GEMM: 2× slower), the first conv as replicate + shift + 1×1, 2× upsampling as
nearest + pad + depthwise blur (uint8 Pad runs in float), 2× upsampling as four exact depthwise
phase convs on the edge-padded integers interleaved by Concat + Reshape (-0.7 %: the interleaving
copies cost nearly what the Resize did; slower below 32 channels), uint8 linear Resize for only the
small maps (none faster at 2 threads).

``tensorrt``: what TensorRT's explicit quantization accepts and fuses (see :mod:`.qdq_rules`):
symmetric int8 activations and weights, per-channel weights on axis 0, float biases, a dedicated
Q/DQ pair per consumer. Q/DQ go in front of the weighted layers (Conv) and on the residual Adds, as
NVIDIA recommends; TensorRT propagates them through MaxPool, Resize and Concat itself.

Either graph is verified against the FP32 ONNX before it is written (:mod:`u2deploy.validate.verify`), on
images calibration did not draw, at the INT8 map bound: a graph that breaks it (damaged ranges, a bad
``--exclude``) leaves no file.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from .. import __version__, formats, hardware
from ..artifact import ArtifactSpec
from ..engines.contract import check_contract
from ..errors import Interrupted, U2Error
from ..files import atomic_path, check_writable, human_size, write_json
from ..files import sha256_of as file_sha256
from ..onnx_file import load_onnx
from ..ort_session import cpu_session, run_first_output
from ..validate.verify import DEFAULT_N, Verification, VerificationImages, choose_verification_images, verify
from . import qdq_rewrites, qdq_rules, rewrites, saturation
from .cache import CacheKey, load_partial, load_ranges, partial_path, save_partial, save_ranges
from .calibrate import (
    CalibrationInterrupted,
    CalibrationStats,
    calibrate,
    method_options,
    ort_method,
    to_tensors_data,
)
from .dataset import DEFAULT_CALIB_DIR, DEFAULT_NUM, calibration_set, input_spec
from .qdq_graph import Violation

log = logging.getLogger(__name__)

TARGETS = ("cpu", "tensorrt")


@dataclass(frozen=True)
class Recipe:
    """How ONNX Runtime's quantizer is driven for one target."""

    target: str
    quant_format: str  # "QDQ" or "QOperator"
    activation_type: str  # "QUInt8" or "QInt8"
    weight_type: str
    per_channel: bool
    op_types: tuple[str, ...]
    extra_options: dict[str, object] = field(default_factory=dict)
    mlas_conv_shapes: bool = False  # rewrites.fit_convs_to_mlas before quantizing
    shared_concat_ranges: bool = False  # rewrites.shared_concat_ranges on the calibrated ranges
    ort_cpu_qdq: bool = False  # qdq_rewrites.for_ort_cpu on the quantized graph
    weight_range: str = "int8"  # "int8" (-127…127) or "int7" (-64…64, ORT's reduce_range): see .saturation

    def describe(self) -> dict[str, object]:
        return {"format": self.quant_format, "activations": self.activation_type, "weights": self.weight_type,
                "weight_range": self.weight_range, "per_channel": self.per_channel, "op_types": list(self.op_types),
                "graph_rewrites": self.graph_rewrites()}

    def graph_rewrites(self) -> list[str]:
        return [name for name, on in (("mlas_conv_shapes", self.mlas_conv_shapes),
                                      ("shared_concat_ranges", self.shared_concat_ranges),
                                      ("ort_cpu_qdq", self.ort_cpu_qdq)) if on]


RECIPES = {
    "cpu": Recipe("cpu", "QDQ", "QUInt8", "QInt8", True,
                  ("Conv", "Relu", "MaxPool", "Resize", "Concat", "Add"),
                  {"ActivationSymmetric": False, "WeightSymmetric": True, "ForceQuantizeNoInputCheck": True},
                  mlas_conv_shapes=True, shared_concat_ranges=True, ort_cpu_qdq=True, weight_range="int7"),
    "tensorrt": Recipe("tensorrt", "QDQ", "QInt8", "QInt8", True, ("Conv", "Add"),
                       {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                        "DedicatedQDQPair": True, "QDQKeepRemovableActivations": True}),
}


@dataclass
class QuantizeResult:
    path: Path
    target: str
    method: str
    seconds: float
    size_bytes: int
    source_size_bytes: int
    calibration: CalibrationStats | None  # None when the ranges came from the cache
    cache: Path
    excluded: list[str]
    verification: Verification
    violations: list[Violation]
    manifest: dict[str, str]
    rewritten_nodes: list[str] = field(default_factory=list)
    saturation_bounds: list[saturation.ChannelBound] = field(default_factory=list)
    source: Path | None = None

    def status_line(self) -> str:
        calib = (f"calibrated {self.calibration.images} images in {self.calibration.seconds:.0f} s"
                 if self.calibration else f"ranges from {self.cache}")
        check = ("TensorRT Q/DQ rules: pass · " if self.target == "tensorrt" and not self.violations else "")
        if self.target == "cpu":
            check += (f"{self.manifest['weight_bits']}-bit weights, saturation-safe on every x86 CPU · "
                      if self.manifest["requires_int8_dot_product"] == "false" else
                      "8-bit weights: accurate only on CPUs with VNNI, AMX or ARM dot product · ")
        if self.rewritten_nodes:
            check += f"{len(self.rewritten_nodes)} graph rewrites for ONNX Runtime's x86 kernels · "
        ratio = self.size_bytes / self.source_size_bytes
        return (f"quantized {self.path} ({human_size(self.size_bytes)}, {ratio:.2f}× the FP32 file) in "
                f"{self.seconds:.0f} s · int8 {self.target}, {self.method}, {calib} · {check}"
                f"{self._verified()} · "
                f"next: u2bench latency --model {self.source} --model {self.path} --paired")

    def _verified(self) -> str:
        v = self.verification
        if v.skipped:
            return f"not verified ({v.skipped})"
        on = v.images.description if v.images else "?"
        return f"vs FP32 ONNX on {on}: {v.measured()} (mean|Δ| ≤ {v.bound.mean_abs:g})"


def load_source(path: str | Path, verb: str = "quantize") -> onnx.ModelProto:
    """The FP32 model to quantize; one-line errors for non-ONNX, quantized or FP16 models."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" and path.is_file():
        raise U2Error(f"{path}: not an ONNX file (expected MODEL.onnx, as u2export onnx writes)")
    model = load_onnx(path)
    check_contract(model, str(path))  # one float32 N×3×H×W input, an N×1×H×W first output
    spec = ArtifactSpec.from_metadata({p.key: p.value for p in model.metadata_props}, str(path))
    quantized = qdq_rules.quantized_nodes(model)
    if quantized or spec.precision == "int8":
        raise U2Error(f"{path}: already quantized ({len(quantized)} {quantized[0] if quantized else 'int8'} "
                      f"nodes); {verb} the FP32 model")
    if spec.precision != "fp32" or any(
            i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        raise U2Error(f"{path}: an FP16 model; {verb} the FP32 one")
    return model


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes kept in float by default: those that make the outputs, and the conv that feeds each.

    U²-Net's output is Sigmoid(fusion 1×1 conv): a few hundred MACs per pixel whose int8 rounding
    shows up directly in the map, for no measurable speed.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    kept: list[str] = []
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.name not in kept:
            kept.append(node.name)
            if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
                break
            node = producer.get(node.input[0])
    return kept


def _check_excluded(model: onnx.ModelProto, names: list[str], source: Path) -> None:
    known = {n.name for n in model.graph.node}
    unknown = [n for n in names if n not in known]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (see the node names in the sensitivity report)"
        raise U2Error(f"--exclude {unknown[0]}: no node of that name in {source}{hint}")


def _preprocess(source: Path, out: Path) -> None:
    """Shape inference and ONNX Runtime's basic (standard-op) graph optimisations, as ORT advises."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(out), skip_symbolic_shape=True)


def _run(path: Path, x: np.ndarray, qdq_in_float: bool = False) -> np.ndarray:
    return run_first_output(cpu_session(path, qdq_in_float=qdq_in_float), x)


def default_output(source: Path, target: str) -> Path:
    """The format table's name for ONNX INT8; ``_trt`` marks a TensorRT-target graph, which the CPU should not run."""
    path = formats.default_output("onnx", "int8", source)
    return path.with_name(f"{path.stem}_trt.onnx") if target == "tensorrt" else path


def default_cache(source: Path) -> Path:
    return source.with_name(f"{source.stem}.calib.json")


def default_target() -> tuple[str, str]:
    """The target that suits this machine, and why: TensorRT only where it and a CUDA GPU are."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "cpu", "no TensorRT here"
    if hardware.gpu() is None:
        return "cpu", "no CUDA GPU here"
    return "tensorrt", "TensorRT and a CUDA GPU here"


def quantize_model(onnx_path: str | Path, calib_dir: str | Path | None, output: str | Path | None = None, *,
                   target: str | None = None, num: int | None = DEFAULT_NUM, method: str = "minmax",
                   seed: int = 0, exclude: list[str] | tuple[str, ...] = (), keep_head_float: bool = True,
                   cache: str | Path | None = None, recalibrate: bool = False,
                   progress: bool = True, n_verify: int = DEFAULT_N, recipe: Recipe | None = None,
                   vnni_only: bool = False, verify_images: str | Path | None = None,
                   no_verify: bool = False) -> QuantizeResult:
    """The whole INT8 stage; raises :class:`U2Error` and leaves no output file when a step fails, or when
    the quantized graph breaks the INT8 map bound against the FP32 ONNX (unless ``no_verify``).

    ``vnni_only`` keeps full-range 8-bit weights for ``cpu``: exact where int8 dot products
    accumulate in 32 bits (VNNI, AMX, ARM), saturating on other x86 CPUs (see :mod:`.saturation`).
    """
    started = time.perf_counter()
    target = _checked_target(target)
    options = method_options(method)
    source = Path(onnx_path)
    model = load_source(source)
    spec = input_spec(model, source)
    output = _checked_output(source, output, target)
    cache = Path(cache) if cache is not None else default_cache(source)
    recipe = _recipe_for(target, recipe, vnni_only)
    calib = calibration_set(calib_dir if calib_dir is not None else DEFAULT_CALIB_DIR, spec, num, seed)
    images = None if no_verify else choose_verification_images(
        Path(verify_images) if verify_images is not None else None, calib.folder, calib.files, n_verify)
    key = CacheKey(model_sha256=file_sha256(source), preprocessing=spec.as_dict(), images=calib.digest,
                   n_images=len(calib.files), method=method,
                   options={**options, "calibration_graph": rewrites.VERSION})

    with tempfile.TemporaryDirectory(prefix="u2quant.") as tmp_dir:
        tmp = Path(tmp_dir)
        prepared = tmp / "prepared.onnx"
        _preprocess(source, prepared)
        prepared_model = onnx.load(str(prepared))
        excluded = list(dict.fromkeys([*(head_nodes(prepared_model) if keep_head_float else []), *exclude]))
        _check_excluded(prepared_model, list(exclude), source)
        ranges, stats = _ranges(prepared_model, model, tmp, calib, method, cache, key, recalibrate, progress)
        to_quantize, changed, ort_cache = _quantizer_inputs(prepared, prepared_model, tmp, recipe, excluded,
                                                            ranges, method)
        with atomic_path(output) as out_tmp:
            quantized, changed, applied = _quantized_graph(to_quantize, out_tmp, recipe, method, excluded,
                                                           ort_cache, changed)
            bounds = _check_saturation(quantized, output, vnni_only) if target == "cpu" else []
            manifest = _metadata(model, recipe, method, calib.describe(), stats,
                                 _float_nodes(quantized, excluded, changed), applied, key, bounds)
            violations = _stamp(quantized, out_tmp, output, manifest, target)
            verification = _verify(source, out_tmp, output.name, images, calib.spec, target,
                                   vnni_only and hardware.int8_saturates() is True)
            verification.raise_if_failed(output)
    size_bytes = _write_manifest(output, manifest, source, recipe, excluded, changed, cache, stats, verification,
                                 target, bounds)
    return QuantizeResult(path=output, target=target, method=method, seconds=time.perf_counter() - started,
                          size_bytes=size_bytes, source_size_bytes=source.stat().st_size, calibration=stats,
                          cache=cache, excluded=excluded, verification=verification, violations=violations,
                          manifest=manifest, rewritten_nodes=changed, saturation_bounds=bounds, source=source)


def _checked_target(target: str | None) -> str:
    if target is None:
        target, why = default_target()
        log.info("--target %s (%s; pass --target to choose)", target, why)
    if target not in TARGETS:
        raise U2Error(f"--target {target}: expected one of {', '.join(TARGETS)}")
    return target


def _checked_output(source: Path, output: str | Path | None, target: str) -> Path:
    output = Path(output) if output is not None else default_output(source, target)
    if output.resolve() == source.resolve():
        raise U2Error(f"-o {output}: would overwrite the model being quantized")
    check_writable(output)
    return output


def _recipe_for(target: str, recipe: Recipe | None, vnni_only: bool) -> Recipe:
    recipe = recipe or RECIPES[target]
    if vnni_only:
        if target != "cpu":
            raise U2Error("--vnni-only applies to --target cpu (TensorRT's int8 kernels do not saturate)")
        recipe = replace(recipe, weight_range="int8")
    return recipe


def _ranges(prepared_model: onnx.ModelProto, model: onnx.ModelProto, tmp: Path, calib, method: str, cache: Path,
            key: CacheKey, recalibrate: bool, progress: bool) -> tuple[dict, CalibrationStats | None]:
    """The calibrated ranges, from the cache where it holds them for this key, and the calibration's
    stats (None from the cache).

    Ranges come from the graph with every conv rewritten (exact, so the tensors it shares with the
    original get the same ranges): one cache serves both targets and any ``--exclude``.
    """
    ranges = None if recalibrate else load_ranges(cache, key)
    if ranges is not None:
        log.info("calibration ranges from %s (same model, preprocessing and images)", cache)
        return ranges, None
    calibration_graph = tmp / "calibration.onnx"
    rewritten = onnx.ModelProto.FromString(prepared_model.SerializeToString())
    rewrites.fit_convs_to_mlas(rewritten)
    onnx.save(rewritten, str(calibration_graph))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    ranges, stats = _calibrate_resumably(calibration_graph, calib, method, batch, progress, cache, key,
                                         None if recalibrate else load_partial(cache, key))
    save_ranges(cache, key, ranges, {"skipped": [str(p) for p, _ in calib.skipped],
                                    "seconds": round(stats.seconds, 1)})
    partial_path(cache).unlink(missing_ok=True)
    return ranges, stats


def _quantizer_inputs(prepared: Path, prepared_model: onnx.ModelProto, tmp: Path, recipe: Recipe,
                      excluded: list[str], ranges: dict, method: str) -> tuple[Path, list[str], Path]:
    """The graph ONNX Runtime's quantizer reads (rewritten where the recipe asks), the nodes rewritten,
    and the ranges written as its calibration cache."""
    to_quantize, changed = prepared, []
    if recipe.mlas_conv_shapes:
        to_quantize = tmp / "rewritten.onnx"
        changed = rewrites.fit_convs_to_mlas(prepared_model, skip=excluded)
        onnx.save(prepared_model, str(to_quantize))
    if recipe.shared_concat_ranges:
        ranges = rewrites.shared_concat_ranges(prepared_model, ranges)
    ort_cache = tmp / "ranges.json"
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(to_tensors_data(ranges, method), ort_cache)
    return to_quantize, changed, ort_cache


def _quantized_graph(to_quantize: Path, out_tmp: Path, recipe: Recipe, method: str, excluded: list[str],
                     ort_cache: Path, changed: list[str]) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """ONNX Runtime's quantized graph, its opsets pruned and rewritten for ONNX Runtime's CPU kernels where
    the recipe asks: (graph, every node rewritten, the rewrites applied)."""
    _quantize_with_ort(to_quantize, out_tmp, recipe, method, excluded, ort_cache)
    quantized = onnx.load(str(out_tmp))
    prune_opsets(quantized)
    applied = [name for name, on in (("mlas_conv_shapes", bool(changed)),
                                     ("shared_concat_ranges", recipe.shared_concat_ranges)) if on]
    if recipe.ort_cpu_qdq and (after := qdq_rewrites.for_ort_cpu(quantized)):
        changed, applied = changed + after, [*applied, "ort_cpu_qdq"]
    return quantized, changed, applied


def _stamp(quantized: onnx.ModelProto, out_tmp: Path, output: Path, manifest: dict[str, str],
           target: str) -> list[Violation]:
    """The metadata written into the graph, a TensorRT graph held to its Q/DQ rules, the graph saved."""
    del quantized.metadata_props[:]
    for k, v in manifest.items():
        quantized.metadata_props.add(key=k, value=v)
    quantized.producer_name, quantized.producer_version = "u2deploy", __version__
    if target == "tensorrt":
        dedicate_qdq_pairs(quantized)
    violations = qdq_rules.check_qdq(quantized) if target == "tensorrt" else []
    if violations:
        raise U2Error(qdq_rules.report(violations, str(output), quantized).replace("\n", ";"))
    onnx.save(quantized, str(out_tmp))
    return violations


def _write_manifest(output: Path, manifest: dict[str, str], source: Path, recipe: Recipe, excluded: list[str],
                    changed: list[str], cache: Path, stats: CalibrationStats | None, verification: Verification,
                    target: str, bounds: list[saturation.ChannelBound]) -> int:
    """``OUTPUT.json`` beside the written model; returns the model's size in bytes."""
    size_bytes = output.stat().st_size
    write_json(Path(f"{output}.json"), {
        **manifest, "file": output.name, "size_bytes": size_bytes, "source": str(source),
        "recipe": recipe.describe(), "excluded_nodes": excluded, "rewritten_nodes": changed,
        "calibration_cache": str(cache),
        "calibration_peak_rss_bytes": stats.peak_rss_bytes if stats else None,
        "verification": verification.to_manifest(),
        "tensorrt_qdq_rules": "pass" if target == "tensorrt" else "not checked (cpu target)",
        "cpu_saturation_check": ({"int8_nodes": len(bounds), "worst_pair_sum": max((b.worst for b in bounds),
                                                                                     default=0),
                                  "bound": saturation.INT16_MAX,
                                  "nodes_that_can_saturate": [b.node for b in bounds if not b.safe]}
                                 if target == "cpu" else "not checked (TensorRT does not saturate)"),
        "built_on": hardware.build_host(),
    })
    return size_bytes


def _check_saturation(quantized: onnx.ModelProto, output: Path, vnni_only: bool) -> list[saturation.ChannelBound]:
    """The saturation proof of a cpu graph; a graph that fails it is written only when asked for VNNI."""
    violations, bounds = saturation.check_saturation(quantized)
    if violations and not vnni_only:
        raise U2Error(saturation.report(violations, bounds, str(output)).splitlines()[0] + "; nothing written")
    return bounds


def _calibrate_resumably(graph: Path, calib, method: str, batch: int, progress: bool, cache: Path, key: CacheKey,
                         resume: tuple[int, dict[str, tuple[float, float]]] | None):
    """Calibrate; on Ctrl-C keep min-max ranges of the images done beside the cache, so a rerun resumes."""
    if resume is not None and method == "minmax":
        log.info("resuming calibration after %d of %d images (ranges in %s)", resume[0], len(calib.files),
                 partial_path(cache))
    try:
        return calibrate(graph, calib, method, batch, progress, resume=resume)
    except CalibrationInterrupted as stop:
        if stop.ranges is None:
            raise Interrupted(f"calibration stopped after {stop.files_done} of {len(calib.files)} images; "
                              f"{method} ranges cannot be resumed, nothing written") from None
        kept = save_partial(cache, key, stop.files_done, stop.ranges)
        raise Interrupted(f"ranges of {stop.files_done} of {len(calib.files)} calibration images kept in "
                          f"{kept}; the same command resumes from there") from None


def _quantize_with_ort(prepared: Path, out: Path, recipe: Recipe, method: str, excluded: list[str],
                       ort_cache: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # ORT's "consider pre-processing" warnings: we did
    try:
        quantize_static(
            str(prepared), str(out), calibration_data_reader=None,
            quant_format=getattr(QuantFormat, recipe.quant_format),
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel, reduce_range=recipe.weight_range == "int7",
            activation_type=getattr(QuantType, recipe.activation_type),
            weight_type=getattr(QuantType, recipe.weight_type), nodes_to_exclude=excluded,
            calibrate_method=ort_method(method),
            extra_options=dict(recipe.extra_options), calibration_cache_path=str(ort_cache))
    except Exception as exc:  # ORT raises ValueError, RuntimeError, its own Fail types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise U2Error(f"ONNX Runtime's quantizer failed ({first}); nothing written") from None
    finally:
        quiet.setLevel(level)


def prune_opsets(model: onnx.ModelProto) -> None:
    """Drop the opset imports no node uses (ORT's optimiser lists every domain it knows)."""
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def dedicate_qdq_pairs(model: onnx.ModelProto) -> int:
    """Give every consumer of a shared DequantizeLinear its own Q/DQ pair; returns the pairs added.

    ONNX Runtime's ``DedicatedQDQPair`` only separates the consumers it quantizes; a tensor that
    feeds a quantized Conv and a float Concat still shares one DQ, which TensorRT cannot fuse.
    The clones carry the same scale and zero point, so the numbers do not change.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    added = 0
    extra: dict[str, list[onnx.NodeProto]] = {}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        users = consumers.get(dq.output[0], [])
        if len(users) < 2:
            continue
        q = producer.get(dq.input[0])
        shared_q = q is not None and q.op_type == "QuantizeLinear" and len(consumers.get(q.output[0], [])) == 1
        for k, user in enumerate(users[1:], start=1):
            clones = []
            source = dq.input[0]
            if shared_q:
                q_clone = onnx.NodeProto()
                q_clone.CopyFrom(q)
                q_clone.name, q_clone.output[0] = f"{q.name}_{k}", f"{q.output[0]}_{k}"
                clones.append(q_clone)
                source = q_clone.output[0]
            dq_clone = onnx.NodeProto()
            dq_clone.CopyFrom(dq)
            dq_clone.name, dq_clone.output[0] = f"{dq.name}_{k}", f"{dq.output[0]}_{k}"
            dq_clone.input[0] = source
            clones.append(dq_clone)
            for i, name in enumerate(user.input):
                if name == dq.output[0]:
                    user.input[i] = dq_clone.output[0]
            extra.setdefault(dq.name, []).extend(clones)
            added += 1
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:
        ordered.append(node)
        ordered.extend(extra.get(node.name, []))  # right after the shared DQ: still topologically sorted
    del graph.node[:]
    graph.node.extend(ordered)
    return added


def _float_nodes(quantized: onnx.ModelProto, excluded: list[str], rewritten: list[str]) -> list[str]:
    """The nodes kept in float, as the written graph has them (a fusion conv may now be a weighted sum)."""
    present = {n.name for n in quantized.graph.node}
    summed = {line.rpartition(": ")[0] for line in rewritten if ": weighted sum" in line}
    return [n if n in present else f"{n} (as a weighted sum)" for n in excluded if n in present or n in summed]


def _metadata(model: onnx.ModelProto, recipe: Recipe, method: str, calib: dict[str, object],
              stats: CalibrationStats | None, float_nodes: list[str], rewrites_applied: list[str],
              key: CacheKey, bounds: list[saturation.ChannelBound]) -> dict[str, str]:
    source = ArtifactSpec.from_metadata({p.key: p.value for p in model.metadata_props})
    used = stats.images if stats else calib["images"]
    bits = 7 if recipe.weight_range == "int7" else 8
    safe = all(b.safe for b in bounds)
    # The ONNX Runtime runner reads requires_int8_dot_product: a CPU without one gets other numbers.
    spec = source.evolve(precision="int8", quant_target=recipe.target,
                         requires_int8_dot_product=recipe.target == "cpu" and not safe)
    return {**spec.to_metadata(),
            "quant_format": f"{recipe.quant_format} {recipe.activation_type[1:].lower()} activations, "
                            f"{recipe.weight_type[1:].lower()} "
                            f"{'per-channel' if recipe.per_channel else 'per-tensor'} weights",
            "weight_bits": str(bits),
            "built_on_cpu": hardware.isa_line(),
            "calibration": f"method={method},images={used},seed={calib['seed']},folder={calib['folder']}",
            "calibration_images_sha256": str(calib["list_sha256"]),
            "float_nodes": ",".join(float_nodes), "graph_rewrites": ",".join(rewrites_applied) or "none",
            "source_sha256": key.model_sha256,
            "quantizer": "onnxruntime.quantization.quantize_static", "u2deploy_version": __version__}


def _verify(source: Path, quantized: Path, name: str, images: VerificationImages | None, spec, target: str,
            vnni_here_saturates: bool) -> Verification:
    """The quantized model against the FP32 ONNX at the INT8 map bound, on images calibration did not draw.

    A graph runs as its target computes it: a TensorRT one with its Q/DQ in float (as TensorRT does), a
    ``--vnni-only`` one built on a CPU that saturates also in float (exact int32 sums, as a CPU with an
    int8 dot product computes it, which this one cannot show); any other on this CPU's integer kernels.
    """
    emulate = target == "tensorrt" or vnni_here_saturates
    how = ("onnxruntime, Q/DQ in float as TensorRT computes" if target == "tensorrt" else
           "onnxruntime, Q/DQ in float as a CPU with an int8 dot product computes" if emulate else "onnxruntime cpu")
    reference = f"{source.name} (fp32, onnxruntime cpu)"
    if images is None:
        return Verification.skip(f"{name} ({how})", reference, "int8")
    x = images.inputs(spec.size, spec.mean, spec.std)
    return verify(lambda b: _run(quantized, b, emulate), lambda b: _run(source, b), x, "int8",
                  images=images, candidate_name=f"{name} ({how})", reference_name=reference)


def quantize(onnx_path: Path, calib_dir: Path, output: Path, target: str = "tensorrt", **options) -> Path:
    """The INT8 stage as the TensorRT builder calls it: the path of the quantized ONNX."""
    return quantize_model(onnx_path, calib_dir, output, target=target, **options).path
