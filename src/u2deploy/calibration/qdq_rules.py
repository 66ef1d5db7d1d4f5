"""Does a Q/DQ ONNX graph follow TensorRT's explicit-quantization rules? Checked on the CPU.

TensorRT's ONNX parser and builder reject or mis-fuse graphs that ONNX Runtime runs happily, and
the error only shows on a GPU, minutes into a build. The rules (TensorRT developer guide,
"Explicit Quantization"; the parser's QuantizeLinear/DequantizeLinear importers):

- ``opset``: the default domain at opset 13–20 (per-channel Q/DQ needs 13; the exporter stops at 20).
- ``domain``: Q/DQ nodes in the default ONNX domain, not ``com.microsoft``.
- ``int8``: quantized tensors are signed INT8 (zero point given, of type int8).
- ``symmetric``: every zero point is 0.
- ``scale``: scales are positive, finite float32 constants.
- ``per-tensor-activations``: activations are quantized per tensor (scalar scale).
- ``per-channel-axis``: per-channel weights are quantized on the output-channel axis (0 for Conv).
- ``bias``: no int32 DequantizeLinear (a quantized bias); TensorRT quantizes biases itself.
- ``pairs``: every QuantizeLinear feeds DequantizeLinear nodes only, with the same scale and zero point.
- ``dedicated``: every DequantizeLinear feeds exactly one consumer (no DQ shared by several nodes),
  so TensorRT can fuse each pair into its consumer.
- ``float-output``: the nodes that make the graph outputs (U²-Net's final Sigmoid) compute in float:
  no DequantizeLinear directly in front, no QuantizeLinear behind.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import U2Error
from ..onnx_file import load_onnx
from . import saturation
from .qdq_graph import QdqGraph, Violation

MIN_OPSET, MAX_OPSET = 13, 20
Q_OPS = ("QuantizeLinear", "DequantizeLinear")
OUTPUT_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}
RULES = ("opset", "domain", "int8", "symmetric", "scale", "per-tensor-activations", "per-channel-axis",
         "bias", "pairs", "dedicated", "float-output")


def _name(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}({node.output[0]})"


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _check_opset(g: QdqGraph) -> list[Violation]:
    version = next((o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or not MIN_OPSET <= version <= MAX_OPSET:
        return [Violation("opset", "model", f"default-domain opset {version}, TensorRT's explicit "
                                            f"quantization needs {MIN_OPSET}–{MAX_OPSET}")]
    return []


def _check_qdq_node(g: QdqGraph, node: onnx.NodeProto) -> list[Violation]:
    found: list[Violation] = []
    name = _name(node)
    if node.domain not in ("", "ai.onnx"):
        found.append(Violation("domain", name, f"in domain {node.domain!r}; TensorRT parses only the "
                                               "default-domain QuantizeLinear/DequantizeLinear"))
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    zero = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None:
        found.append(Violation("scale", name, "scale is not a constant"))
    elif scale.dtype != np.float32 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        found.append(Violation("scale", name, f"scale must be positive finite float32 (got {scale.dtype}, "
                                              f"min {float(np.min(scale)):.3g})"))
    data = g.const(node.input[0]) if node.op_type == "DequantizeLinear" else None
    if node.op_type == "DequantizeLinear" and data is not None and data.dtype == np.int32:
        found.append(Violation("bias", name, "int32 DequantizeLinear (a quantized bias); TensorRT's parser "
                                             "rejects it: keep biases in float"))
    elif len(node.input) < 3 or not node.input[2]:
        found.append(Violation("int8", name, "no zero point, so the type defaults to uint8; "
                                             "TensorRT needs int8"))
    elif zero is None:
        found.append(Violation("int8", name, "zero point is not a constant"))
    else:
        if zero.dtype != np.int8:
            found.append(Violation("int8", name, f"quantized type {zero.dtype}; TensorRT needs signed int8"))
        if np.any(zero != 0):
            found.append(Violation("symmetric", name, "non-zero zero point; TensorRT needs symmetric "
                                                      "quantization (zero point 0)"))
    if scale is not None and scale.size > 1:
        found.extend(_check_per_channel(g, node, name))
    return found


def _check_per_channel(g: QdqGraph, node: onnx.NodeProto, name: str) -> list[Violation]:
    """Per-channel scales are for weights only, on the consumer's output-channel axis."""
    src = g.producer.get(node.input[0])
    is_weight = node.input[0] in g.constants or (
        node.op_type == "DequantizeLinear" and src is not None and src.op_type == "QuantizeLinear"
        and src.input[0] in g.constants)
    if not is_weight:
        return [Violation("per-tensor-activations", name, "activation quantized per channel; TensorRT "
                                                          "quantizes activations per tensor")]
    found = []
    for consumer in g.consumers.get(node.output[0], []) if node.op_type == "DequantizeLinear" else []:
        wanted = OUTPUT_CHANNEL_AXIS.get(consumer.op_type)
        if wanted is not None and list(consumer.input).index(node.output[0]) == 1 and _axis(node) != wanted:
            found.append(Violation("per-channel-axis", name,
                                   f"weights of {consumer.op_type} {_name(consumer)} quantized on axis "
                                   f"{_axis(node)}, not the output-channel axis {wanted}"))
    return found


def _check_pairs(g: QdqGraph, node: onnx.NodeProto) -> list[Violation]:
    name = _name(node)
    consumers = g.consumers.get(node.output[0], [])
    if node.op_type == "QuantizeLinear":
        if node.output[0] in g.outputs:
            return [Violation("pairs", name, "a graph output is quantized; outputs must stay float")]
        bad = [c for c in consumers if c.op_type != "DequantizeLinear"]
        if bad:
            return [Violation("pairs", name, f"feeds {bad[0].op_type} {_name(bad[0])}, "
                                             "not a DequantizeLinear")]
        for dq in consumers:
            if not _same_params(g, node, dq):
                return [Violation("pairs", name, f"its DequantizeLinear {_name(dq)} has another scale or "
                                                 "zero point")]
        return []
    if len(consumers) + (node.output[0] in g.outputs) > 1:
        shown = ", ".join(map(_name, consumers[:3])) + ("…" if len(consumers) > 3 else "")
        return [Violation("dedicated", name, f"feeds {len(consumers)} nodes ({shown}); TensorRT fuses a "
                                             "Q/DQ pair into one consumer: give each its own pair")]
    return []


def _same_params(g: QdqGraph, q: onnx.NodeProto, dq: onnx.NodeProto) -> bool:
    for i in (1, 2):
        a = g.const(q.input[i]) if len(q.input) > i and q.input[i] else None
        b = g.const(dq.input[i]) if len(dq.input) > i and dq.input[i] else None
        if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
            return False
    return _axis(q) == _axis(dq) or g.const(q.input[1]).size == 1  # type: ignore[union-attr]


def _check_float_outputs(g: QdqGraph) -> list[Violation]:
    found = []
    for out in g.model.graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            found.append(Violation("float-output", out.name, "graph output is not float32"))
        node = g.producer.get(out.name)
        if node is None or node.op_type in Q_OPS:
            continue
        for name in node.input:
            src = g.producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear":
                found.append(Violation("float-output", _name(node),
                                       f"{node.op_type} making output {out.name} reads a DequantizeLinear; "
                                       "keep it in float (exclude it from quantization)"))
                break
    return found


def check_qdq(model: onnx.ModelProto | str | Path) -> list[Violation]:
    """Every rule violation in the graph (empty: TensorRT's explicit quantization accepts it)."""
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model)
    g = QdqGraph(model)
    found = _check_opset(g)
    for node in g.nodes:
        if node.op_type in Q_OPS:
            found += _check_qdq_node(g, node)
            found += _check_pairs(g, node)
    return found + _check_float_outputs(g)


QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QLinearConcat")


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Op types of the nodes that make a graph quantized (Q/DQ, QLinear*, *Integer), in graph order."""
    return [n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS
            or n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")]


def count_qdq(model: onnx.ModelProto) -> tuple[int, int]:
    """(QuantizeLinear, DequantizeLinear) node counts."""
    ops = [n.op_type for n in model.graph.node]
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear")


def report(violations: list[Violation], source: str, model: onnx.ModelProto | None = None) -> str:
    """One line when the graph passes; the violations grouped by rule otherwise."""
    counts = f" ({count_qdq(model)[0]} Q, {count_qdq(model)[1]} DQ)" if model is not None else ""
    if not violations:
        return f"{source}: follows TensorRT's explicit-quantization rules{counts}"
    by_rule: dict[str, list[Violation]] = defaultdict(list)
    for v in violations:
        by_rule[v.rule].append(v)
    lines = [f"{source}: {len(violations)} violation{'s' if len(violations) > 1 else ''} of TensorRT's "
             f"explicit-quantization rules{counts}"]
    for rule in sorted(by_rule, key=RULES.index):
        items = by_rule[rule]
        more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
        lines.append(f"  {items[0]}{more}")
    return "\n".join(lines)


def check_rules(path: str | Path, rules: str = "auto") -> tuple[str, bool]:
    """``u2export check-qdq``: the report for one rule set ("tensorrt", "cpu" or "auto"), and whether it passed."""
    model = load_onnx(path)
    if rules == "auto":
        target = next((p.value for p in model.metadata_props if p.key == "quant_target"), "tensorrt")
        rules = "cpu" if target == "cpu" else "tensorrt"
    if rules not in ("tensorrt", "cpu"):
        raise U2Error(f"--rules {rules}: expected tensorrt, cpu or auto")
    if not quantized_nodes(model):
        return f"{path}: no quantized nodes to check (a float model)", True
    if rules == "cpu":
        violations, bounds = saturation.check_saturation(model)
        return saturation.report(violations, bounds, str(path)), not violations
    violations = check_qdq(model)
    return report(violations, str(path), model), not violations
