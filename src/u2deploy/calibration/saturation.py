"""Can an int8 convolution of this graph saturate on an x86 CPU without VNNI? Proven from the weights.

On x86 without a 32-bit int8 dot product (SSE4.1, AVX2, AVX-512F without VNNI), ONNX Runtime's
MLAS kernels (and oneDNN's) multiply u8 activations by s8 weights with VPMADDUBSW, which adds
two adjacent products into a *saturating* int16 before widening. VNNI (VPDPBUSD), AMX and ARM's
dot product accumulate in int32 and never saturate, so one artifact gives different maps on two
CPUs. ONNX Runtime's quantization docs and OpenVINO's "saturation (overflow) issue" page describe
it; s8 activations are no way out, since ONNX Runtime shifts them to u8 on x86
(``QDQS8ToU8Transformer``).

Which two weights land in one pair depends on MLAS's packing, so the proof takes the worst case:
a u8 activation is at most 255, and for every output channel the two largest same-sign |w| must
satisfy ``255 × (|w|₁ + |w|₂) ≤ 32767``. Weights in [-64, 64] (ONNX Runtime's ``reduce_range``,
NNCF's overflow fix) always do; full-range int8 weights generally do not. u8 weights (U8U8) run
on a kernel that widens to 16 bits first and are not affected.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..onnx_file import load_onnx
from .qdq_graph import QdqGraph, Violation

U8_MAX = 255
INT16_MAX = 32767
# Weighted op → (index of its weight input, the weight's output-channel axis).
_WEIGHTED = {"Conv": (1, 0), "ConvTranspose": (1, 1), "MatMul": (1, -1), "Gemm": (1, -1),
             "QLinearConv": (3, 0), "ConvInteger": (1, 0), "QLinearMatMul": (3, -1), "MatMulInteger": (1, -1)}
_FLOAT_FORMS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # integer only with DequantizeLinear inputs


@dataclass(frozen=True)
class ChannelBound:
    """The worst pair sum of one weighted node: ``255 × (|w|₁ + |w|₂)`` over its output channels."""

    node: str
    op_type: str
    channels: int
    worst: int
    failing_channels: int

    @property
    def safe(self) -> bool:
        return self.failing_channels == 0


def _int8_weight(g: QdqGraph, node: onnx.NodeProto, index: int) -> np.ndarray | None:
    """The raw int8 weight a kernel multiplies by: an initializer, directly or behind a DequantizeLinear."""
    if len(node.input) <= index:
        return None
    name = node.input[index]
    producer = g.producer.get(name)
    if node.op_type in _FLOAT_FORMS:
        if producer is None or producer.op_type != "DequantizeLinear":
            return None  # a float weight: this node runs in float
        name = producer.input[0]
    weight = g.const(name)
    return weight if weight is not None and weight.dtype == np.int8 else None


def _integer_input(g: QdqGraph, node: onnx.NodeProto) -> bool:
    """Whether ONNX Runtime runs the node on integers: a QLinear/Integer op, or Q/DQ on both inputs."""
    if node.op_type not in _FLOAT_FORMS:
        return True
    producer = g.producer.get(node.input[0])
    return producer is not None and producer.op_type == "DequantizeLinear"


def pair_sums(weight: np.ndarray, out_axis: int = 0) -> np.ndarray:
    """Per output channel (along ``out_axis``), the largest ``|w|₁ + |w|₂`` of two same-sign weights."""
    w = np.moveaxis(weight.astype(np.int64), out_axis, 0)
    rows = w.reshape(w.shape[0], -1)
    if rows.shape[1] < 2:
        rows = np.concatenate([rows, np.zeros_like(rows)], axis=1)
    positive = np.sort(np.where(rows > 0, rows, 0), axis=1)[:, -2:].sum(axis=1)
    negative = np.sort(np.where(rows < 0, -rows, 0), axis=1)[:, -2:].sum(axis=1)
    return np.maximum(positive, negative)


def channel_bounds(model: onnx.ModelProto) -> Iterator[ChannelBound]:
    """Every weighted node that runs on int8 weights, with its worst pair sum."""
    g = QdqGraph(model)
    for node in g.nodes:
        if node.op_type not in _WEIGHTED:
            continue
        index, out_axis = _WEIGHTED[node.op_type]
        weight = _int8_weight(g, node, index)
        if weight is None or not _integer_input(g, node):
            continue
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            out_axis = 0  # B is N×K
        sums = U8_MAX * pair_sums(weight, out_axis)
        yield ChannelBound(node.name or f"{node.op_type}({node.output[0]})", node.op_type, len(sums),
                           int(sums.max()), int((sums > INT16_MAX).sum()))


def check_saturation(model: onnx.ModelProto | str | Path) -> tuple[list[Violation], list[ChannelBound]]:
    """The nodes whose u8×s8 pair sums can exceed int16, and the bounds of every node checked."""
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model)
    bounds = list(channel_bounds(model))
    violations = [Violation("saturation", b.node,
                            f"{b.failing_channels} of {b.channels} output channels can reach {b.worst} > "
                            f"{INT16_MAX} in VPMADDUBSW's int16 pair sum (u8 × s8 on x86 without VNNI)")
                  for b in bounds if not b.safe]
    return violations, bounds


def report(violations: list[Violation], bounds: list[ChannelBound], source: str) -> str:
    """One line when every int8 node is exact on every x86 CPU; the failing nodes otherwise."""
    if not bounds:
        return f"{source}: no int8-weight convolutions or matmuls to check"
    worst = max(b.worst for b in bounds)
    if not violations:
        return (f"{source}: saturation-safe on every x86 CPU: {len(bounds)} int8 nodes, worst u8×s8 pair sum "
                f"{worst} ≤ {INT16_MAX}")
    lines = [f"{source}: {len(violations)} of {len(bounds)} int8 nodes can saturate on x86 CPUs without VNNI "
             f"(worst pair sum {worst} > {INT16_MAX}); rebuild with 7-bit weights "
             "(u2export quantize --target cpu, without --vnni-only)"]
    lines += [f"  {v}" for v in violations[:10]]
    if len(violations) > 10:
        lines.append(f"  (and {len(violations) - 10} more)")
    return "\n".join(lines)
