"""FP32 ONNX → FP16 ONNX: half-precision weights and activations, FP32 inputs and outputs.

Our own pass rather than ``onnxconverter-common``: U²-Net uses a handful of ops whose float inputs
are known (Resize's ``scales`` must stay float32, for one), the pass is ~100 lines, and it needs no
extra dependency. Nodes are converted when every float input they read is a data input of the op
(:data:`FP16_OPS`); others stay FP32 behind Cast nodes. Kept in FP32 as well:

- the nodes that make the graph outputs (U²-Net's final Sigmoid), so the map keeps full precision;
- every node whose output, measured on real images, comes within :data:`OVERFLOW_MARGIN` of FP16's
  largest value (65504), and the nodes that read it.

The written model is verified against its FP32 source (:mod:`u2deploy.validate.verify`) on images
other than those its ranges were measured on, at the FP16 map bound, both as ONNX Runtime runs it
and as emulated: either breaking the bound writes nothing.

ONNX Runtime's CPU provider has few FP16 kernels: it inserts casts and computes most ops in FP32,
so its error is a lower bound of a GPU's. :func:`emulation_model` gives the faithful number: the
FP32 graph with weights and every intermediate tensor rounded to FP16 (Cast→Cast pairs), i.e. FP16
storage with FP32 accumulation, what TensorRT's FP16 kernels do.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__, formats, hardware
from ..artifact import ArtifactSpec
from ..errors import U2Error
from ..files import atomic_path, check_writable, human_size, write_json
from ..ort_session import cpu_session, run_first_output, with_outputs
from ..plural import plural
from ..validate.verify import Bound, Verification, VerificationImages, choose_verification_images, compare

FP16_MAX = 65504.0
OVERFLOW_MARGIN = 16.0  # keep a node in FP32 when |activation| > 65504 / 16 on the measured images
ALL = None
# op type -> indices of its inputs that may become FP16 (None: all of them)
FP16_OPS: dict[str, tuple[int, ...] | None] = {
    "Conv": ALL, "ConvTranspose": ALL, "Relu": ALL, "LeakyRelu": ALL, "Sigmoid": ALL, "Tanh": ALL,
    "MaxPool": (0,), "AveragePool": (0,), "GlobalAveragePool": (0,), "Add": ALL, "Sub": ALL, "Mul": ALL,
    "Div": ALL, "Concat": ALL, "Resize": (0,), "Clip": ALL, "BatchNormalization": ALL, "Identity": ALL,
    "Reshape": (0,), "Transpose": ALL, "Slice": (0,), "Softmax": ALL,
}


@dataclass
class Fp16Result:
    path: Path
    seconds: float
    size_bytes: int
    source_size_bytes: int
    fp32_nodes: dict[str, str]  # node -> why it stayed FP32
    max_activation: float  # largest |value| of any intermediate tensor on the measured images
    verification: Verification  # checks ORT_CHECK and EMULATED_CHECK, unless skipped
    manifest: dict[str, str] = field(default_factory=dict)
    source: Path | None = None

    def status_line(self) -> str:
        ratio = self.size_bytes / self.source_size_bytes
        v = self.verification
        if v.skipped:
            checked = f"not verified ({v.skipped})"
        else:
            found = dict(v.checks)
            emulated, ort_cpu = found[EMULATED_CHECK], found[ORT_CHECK]
            checked = (f"vs FP32 on {v.images.description if v.images else '?'}: emulated FP16 max|Δ| "
                       f"{emulated.max_abs:.2g}, mean|Δ| {emulated.mean_abs:.2g}; ORT-CPU max|Δ| "
                       f"{ort_cpu.max_abs:.2g}, mean|Δ| {ort_cpu.mean_abs:.2g}; "
                       f"bound mean|Δ| ≤ {v.bound.mean_abs:g}: pass")
        return (f"converted {self.path} ({human_size(self.size_bytes)}, {ratio:.2f}× the FP32 file) in "
                f"{self.seconds:.0f} s · {plural(len(self.fp32_nodes), 'node')} kept FP32 · "
                f"max |activation| {self.max_activation:.3g} (FP16 max 65504) · {checked} · "
                f"next: u2bench latency --model {self.source} --model {self.path} --paired")


ORT_CHECK = "onnxruntime cpu"  # the written model as run here (ORT's CPU provider: most ops in FP32)
EMULATED_CHECK = "emulated fp16"  # FP16 storage, FP32 accumulation: what a GPU computes


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    names = {vi.name for vi in infos if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    names |= {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute[0].t.data_type == TensorProto.FLOAT:
            names.add(node.output[0])
    return names


def _fp16_inputs(node: onnx.NodeProto) -> Iterable[int]:
    wanted = FP16_OPS[node.op_type]
    return range(len(node.input)) if wanted is None else (i for i in wanted if i < len(node.input))


def choose_fp32_nodes(model: onnx.ModelProto, max_abs: dict[str, float] | None = None,
                      keep: Iterable[str] = ()) -> dict[str, str]:
    """Which nodes stay FP32, and why."""
    reasons: dict[str, str] = {name: "asked (--keep)" for name in keep}
    outputs = {o.name for o in model.graph.output}
    limit = FP16_MAX / OVERFLOW_MARGIN
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    for node in model.graph.node:
        if node.op_type not in FP16_OPS:
            reasons.setdefault(node.name, f"{node.op_type} has no FP16 rule")
        elif outputs.intersection(node.output):
            reasons.setdefault(node.name, "makes a graph output")
        for out in node.output:
            if max_abs and max_abs.get(out, 0.0) > limit:
                why = f"|{out}| reaches {max_abs[out]:.3g}, near FP16's 65504"
                reasons.setdefault(node.name, why)
                for consumer in consumers[out]:
                    reasons.setdefault(consumer.name, why)
    return reasons


def convert_model(model: onnx.ModelProto, fp32_nodes: Iterable[str]) -> onnx.ModelProto:
    """The FP16 graph: FP16 nodes read FP16 weights; Casts where FP16 and FP32 regions meet."""
    keep = set(fp32_nodes)
    floats = _float_tensors(model)
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    half_nodes = {n.name for n in graph.node if n.op_type in FP16_OPS and n.name not in keep}
    half_tensors = {out for n in graph.node if n.name in half_nodes for out in n.output if out in floats}
    outputs = {o.name for o in graph.output}
    renamed = {name: f"{name}__fp16" for name in half_tensors & outputs}

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}

    def cast(name: str, to: int) -> str:
        if (name, to) not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            casts[(name, to)] = f"{name}__to_{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[(name, to)]], to=to,
                                              name=f"Cast_{suffix}__{name}"))
        return casts[(name, to)]

    def half_initializer(name: str) -> str:
        if name not in half_inits:
            half_inits[name] = f"{name}__fp16"
            array = numpy_helper.to_array(initializers[name]).astype(np.float16)
            graph.initializer.append(numpy_helper.from_array(array, half_inits[name]))
        return half_inits[name]

    for node in graph.node:
        inputs = [renamed.get(n, n) for n in node.input]
        if node.name in half_nodes:
            for i in _fp16_inputs(node):
                name = node.input[i]
                if not name or name not in floats or name in half_tensors:
                    continue
                inputs[i] = (half_initializer(name) if name in initializers
                             else cast(name, TensorProto.FLOAT16))
        else:
            inputs = [cast(renamed.get(n, n), TensorProto.FLOAT) if n in half_tensors else n
                      for n in node.input]
        node.input[:] = inputs
        node.output[:] = [renamed.get(n, n) for n in node.output]
        new_nodes.append(node)
    for name, half in renamed.items():
        new_nodes.append(helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT,
                                          name=f"Cast_fp32__{name}"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {n for node in graph.node for n in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, check_type=True)


def emulation_model(model: onnx.ModelProto, fp32_nodes: Iterable[str]) -> onnx.ModelProto:
    """The FP32 graph computing what the FP16 graph stores: weights and FP16 nodes' outputs rounded.

    Run it with graph optimisations off, so no Cast→Cast pair is folded away.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep = set(fp32_nodes)
    floats = _float_tensors(model)
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    half_nodes = [n for n in graph.node if n.op_type in FP16_OPS and n.name not in keep]
    for node in half_nodes:
        for i in _fp16_inputs(node):
            name = node.input[i]
            if name in initializers and name in floats:
                array = numpy_helper.to_array(initializers[name]).astype(np.float16).astype(np.float32)
                initializers[name].CopyFrom(numpy_helper.from_array(array, name))
    rounded: dict[str, str] = {}
    half_names = {n.name for n in half_nodes}
    new_nodes: list[onnx.NodeProto] = []
    inputs = {i.name for i in graph.input}
    for node in graph.node:
        if node.name in half_names:
            for i in _fp16_inputs(node):
                name = node.input[i]
                if name in inputs and name in floats:  # the FP32 graph input, cast on its way in
                    if name not in rounded:
                        rounded[name] = _round_pair(name, new_nodes)
                    node.input[i] = rounded[name]
        new_nodes.append(node)
        if node.name in half_names:
            for out in node.output:
                if out in floats:
                    node.output[list(node.output).index(out)] = f"{out}__raw"
                    new_nodes.extend(_round_nodes(f"{out}__raw", out))
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    return model


def _round_nodes(src: str, dst: str) -> list[onnx.NodeProto]:
    return [helper.make_node("Cast", [src], [f"{dst}__half"], to=TensorProto.FLOAT16, name=f"Round16__{dst}"),
            helper.make_node("Cast", [f"{dst}__half"], [dst], to=TensorProto.FLOAT, name=f"Back32__{dst}")]


def _round_pair(name: str, nodes: list[onnx.NodeProto]) -> str:
    nodes.extend(_round_nodes(name, f"{name}__rounded"))
    return f"{name}__rounded"


def activation_ranges(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    """Largest |value| of every float tensor over the batches of ``x`` (one image at a time)."""
    floats = _float_tensors(model)
    inits = {i.name for i in model.graph.initializer}
    names = [out for n in model.graph.node for out in n.output if out in floats and out not in inits]
    session = cpu_session(with_outputs(model, names), optimise=False)
    input_name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]
    peak: dict[str, float] = dict.fromkeys(out_names, 0.0)
    batch = session.get_inputs()[0].shape[0]
    step = batch if isinstance(batch, int) and batch > 0 else 1
    for start in range(0, len(x) - step + 1, step):
        values = session.run(None, {input_name: x[start:start + step]})
        for name, value in zip(out_names, values, strict=True):
            finite = np.abs(value[np.isfinite(value)])
            peak[name] = max(peak[name], float(finite.max()) if finite.size else 0.0)
    return peak


def _load_fp32(path: Path) -> onnx.ModelProto:
    from ..calibration.quantize import load_source

    return load_source(path, "convert")  # the same refusals as quantize: not ONNX, quantized, already FP16


def _range_images(model: onnx.ModelProto, path: Path, calib_dir: Path | None,
                  n: int) -> tuple[np.ndarray, str, list[Path]]:
    """The images activation ranges are measured on, and their files (which verification then leaves out):
    ``n`` drawn from ``--calib``, else the first choice of verification images (other generated scenes than
    verification's, where it comes to those)."""
    from ..calibration.dataset import CalibrationSet, input_spec, sample_images

    spec = input_spec(model, path)
    if calib_dir is not None:
        calib = CalibrationSet(calib_dir, sample_images(calib_dir, n, seed=0), spec, seed=0, requested=n)
        x = np.concatenate(list(calib.batches(1)))
        return x, f"{plural(len(x), 'image')} from {calib_dir}", list(calib.files)
    chosen = choose_verification_images(n=n, generated_seed=1)
    return chosen.inputs(spec.size, spec.mean, spec.std), chosen.description, list(chosen.paths)


def _verify(source: Path, written: Path, name: str, model: onnx.ModelProto, fp32_nodes: dict[str, str],
            images: VerificationImages) -> Verification:
    """The written FP16 model and its emulation against the FP32 source, at the FP16 map bounds."""
    from ..calibration.dataset import input_spec

    spec = input_spec(model, source)
    x = images.inputs(spec.size, spec.mean, spec.std)
    reference = run_first_output(cpu_session(source), x)
    emulation = cpu_session(emulation_model(model, fp32_nodes), optimise=False)
    checks = ((ORT_CHECK, compare(lambda b: run_first_output(cpu_session(written), b), reference, x, "fp16")),
              (EMULATED_CHECK, compare(lambda b: run_first_output(emulation, b), reference, x, "fp16")))
    return Verification(f"{name} (onnxruntime cpu, and emulated)", f"{source.name} (fp32, onnxruntime cpu)",
                        Bound.for_precision("fp16"), images, checks)


def convert_fp16_model(onnx_path: str | Path, output: str | Path | None = None, *,
                       calib_dir: str | Path | None = None, n_images: int = 8,
                       keep: Iterable[str] = (), verify_images: str | Path | None = None,
                       no_verify: bool = False) -> Fp16Result:
    """The whole FP16 stage: measure ranges, convert, verify against FP32, write atomically with metadata.

    Raises :class:`U2Error` and leaves no file when a step fails or the FP16 bound is broken.
    """
    import logging

    started = time.perf_counter()
    source = Path(onnx_path)
    model = _load_fp32(source)
    output = Path(output) if output is not None else formats.default_output("onnx", "fp16", source)
    if output.resolve() == source.resolve():
        raise U2Error(f"-o {output}: would overwrite the model being converted")
    keep = list(keep)
    unknown = [k for k in keep if k not in {n.name for n in model.graph.node}]
    if unknown:
        raise U2Error(f"--keep {unknown[0]}: no node of that name in {source}")
    check_writable(output)
    calib_dir = Path(calib_dir) if calib_dir else None
    x, measured_on, drawn = _range_images(model, source, calib_dir, n_images)
    images = None if no_verify else choose_verification_images(
        Path(verify_images) if verify_images else None, calib_dir, drawn, n_images)
    peaks = activation_ranges(model, x)
    fp32_nodes = choose_fp32_nodes(model, peaks, keep)
    half = convert_model(onnx.ModelProto.FromString(model.SerializeToString()), fp32_nodes)
    spec = ArtifactSpec.from_metadata({p.key: p.value for p in model.metadata_props}, str(source))
    manifest = {**spec.evolve(precision="fp16").to_metadata(), "io_precision": "fp32",
                "fp32_nodes": ",".join(fp32_nodes), "converter": f"u2deploy.export.fp16 {__version__}"}
    del half.metadata_props[:]
    for k, v in manifest.items():
        half.metadata_props.add(key=k, value=v)
    half.producer_name, half.producer_version = "u2deploy", __version__
    with atomic_path(output) as tmp:
        onnx.save(half, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            first = str(exc).splitlines()[0]
            raise U2Error(f"{output}: the FP16 graph fails onnx.checker ({first})") from None
        if images is None:
            verification = Verification.skip(output.name, f"{source.name} (fp32)", "fp16")
        else:
            verification = _verify(source, tmp, output.name, model, fp32_nodes, images)
            verification.raise_if_failed(output)
    size_bytes = output.stat().st_size
    logging.getLogger(__name__).debug("fp16 nodes kept fp32: %s", fp32_nodes)
    write_json(Path(f"{output}.json"), {
        **manifest, "file": output.name, "size_bytes": size_bytes, "source": str(source),
        "fp32_nodes": fp32_nodes, "max_abs_activation": max(peaks.values(), default=0.0),
        "activation_ranges_measured_on": measured_on,
        "verification": verification.to_manifest() | ({} if verification.skipped else {
            "note": "onnxruntime cpu computes most FP16 ops in FP32 (a lower bound of a GPU's error); "
                    "emulated fp16 rounds every tensor to FP16 with FP32 accumulation, as a GPU does"}),
        "built_on": hardware.build_host(),
    })
    return Fp16Result(path=output, seconds=time.perf_counter() - started, size_bytes=size_bytes,
                      source_size_bytes=source.stat().st_size, fp32_nodes=fp32_nodes,
                      max_activation=max(peaks.values(), default=0.0), verification=verification,
                      manifest=manifest, source=source)


def convert_fp16(onnx_path: Path, output: Path, **options) -> Path:
    """The FP16 stage as the TensorRT builder calls it: the path of the FP16 ONNX (verified as ``u2export fp16``)."""
    return convert_fp16_model(onnx_path, output, **options).path
