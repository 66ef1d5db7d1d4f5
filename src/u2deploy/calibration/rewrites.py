"""Exact rewrites of the FP32 graph that put every U²-Net convolution on ONNX Runtime's fast INT8 kernel.

On x86, ONNX Runtime's QLinearConv has two paths. MLAS's symmetric "indirect" convolution
(ConvSym: int8 weights with zero point 0, VNNI kernels, no im2col buffer) is taken only for a
group-1 conv whose input channels are a multiple of 4 and whose output channels are at least 16
and a multiple of 8 (``MlasConvSymPackWSize``); anything else falls back to im2col + GEMM. U²-Net
has two shapes that miss it: the first conv (3 input channels) and the six side convs (64 → 1,
3×3), which at 320×320 took 8.2 and 19.6 ms of the small model's 150 ms INT8 run here.

The rewrites change no number beyond float32 summation order:

- ``pad_channels``: zero input channels (a Pad in front, zero weights) up to a multiple of 4; zero
  filters up to 16 output channels, then a Slice back to the real ones.
- ``factor_single_output``: a k×k conv with one output channel becomes a 1×1 conv computing the k²
  per-tap partial sums (one channel each) and a k×k conv with one-hot weights that adds them up
  shifted into place. Both then fit ConvSym; at 320×320 the side1 conv goes 19.6 → ~2.7 ms.

:func:`shared_concat_ranges` is the other half: ONNX Runtime's QLinearConcat copies an input with
``memcpy`` when its scale and zero point equal the output's, and otherwise maps every byte through
a lookup table. Giving each Concat's inputs and output the union of their ranges (and the tensors
tied to them through ops that keep their input's quantization, such as Resize and MaxPool) makes
every concat a copy (and lets :mod:`.qdq_rewrites` drop its Q/DQ altogether), at the price of a
slightly coarser step on the narrower inputs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

from .cache import Ranges
from .graph_edit import GraphEdit, attr

VERSION = "mlas-conv-shapes/1"  # recorded in the calibration cache key: ranges depend on this graph
INPUT_ALIGN = 4  # MLAS ConvSym: input channels % 4 == 0 (every x86 kernel)
OUTPUT_MIN = 16  # ... output channels >= 16 (FilterOutputChannelPackCount)
OUTPUT_ALIGN = 8  # ... output channels % 8 == 0 (AVX2 and AVX-VNNI; AVX-512 needs 4)
MAX_TAPS = 16  # factor a one-output conv only while its taps fit one 16-channel block
SAME_QUANTIZATION_OPS = ("Resize", "MaxPool", "AveragePool", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                         "Slice")  # ORT's quantizer gives their output the input's scale and zero point


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _plain_conv(g: GraphEdit, node: onnx.NodeProto) -> np.ndarray | None:
    """The 4-D weight of a group-1 Conv whose weight (and bias) are initializers; else None."""
    if node.op_type != "Conv" or attr(node, "group", 1) != 1 or len(node.input) < 2:
        return None
    w = g.value(node.input[1])
    if w is None or w.ndim != 4 or (len(node.input) > 2 and node.input[2] and g.value(node.input[2]) is None):
        return None
    return w


def _conv(inputs: list[str], output: str, name: str, like: onnx.NodeProto | None, **attrs) -> onnx.NodeProto:
    """A Conv with ``like``'s geometry (pads, strides, dilations, auto_pad) unless ``attrs`` say otherwise."""
    copied = {a.name: helper.get_attribute_value(a) for a in (like.attribute if like is not None else [])
              if a.name in ("pads", "strides", "dilations", "auto_pad")}
    return helper.make_node("Conv", inputs, [output], name=name, **{**copied, **attrs})


def factor_single_output(g: GraphEdit, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """k×k conv, one output channel → 1×1 per-tap conv + k×k one-hot sum conv (same geometry)."""
    w = _plain_conv(g, node)
    if w is None or w.shape[0] != 1 or not 1 < w.shape[2] * w.shape[3] <= MAX_TAPS:
        return None
    _, channels, kh, kw = w.shape
    taps_w = np.zeros((OUTPUT_MIN, channels, 1, 1), w.dtype)
    sum_w = np.zeros((1, OUTPUT_MIN, kh, kw), w.dtype)
    for t in range(kh * kw):
        ky, kx = divmod(t, kw)
        taps_w[t, :, 0, 0] = w[0, :, ky, kx]
        sum_w[0, t, ky, kx] = 1.0
    taps = g.fresh(f"{node.output[0]}_taps")
    return [
        _conv([node.input[0], g.add_initializer(f"{node.name}_taps_w", taps_w)], taps, g.fresh(f"{node.name}_taps"),
              None, kernel_shape=[1, 1]),
        _conv([taps, g.add_initializer(f"{node.name}_sum_w", sum_w), *node.input[2:]], node.output[0],
              g.fresh(f"{node.name}_sum"), node, kernel_shape=[kh, kw]),
    ]


def pad_channels(g: GraphEdit, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Zero input channels up to a multiple of 4 and zero filters up to ≥ 16 (multiple of 8), sliced off after."""
    w = _plain_conv(g, node)
    if w is None:
        return None
    out_c, in_c = w.shape[:2]
    in_p = _round_up(in_c, INPUT_ALIGN)
    out_p = max(OUTPUT_MIN, _round_up(out_c, OUTPUT_ALIGN))
    if (in_p, out_p) == (in_c, out_c):
        return None
    nodes: list[onnx.NodeProto] = []
    x = node.input[0]
    if in_p != in_c:
        pads = g.add_initializer(f"{node.name}_channel_pads", np.array([0, 0, 0, 0, 0, in_p - in_c, 0, 0], np.int64))
        padded = g.fresh(f"{x}_channel_padded")
        nodes.append(helper.make_node("Pad", [x, pads], [padded], name=g.fresh(f"{node.name}_channel_pad")))
        x = padded
    wide = np.zeros((out_p, in_p, *w.shape[2:]), w.dtype)
    wide[:out_c, :in_c] = w
    inputs = [x, g.add_initializer(f"{node.name}_w_padded", wide)]
    if len(node.input) > 2 and node.input[2]:
        bias = np.zeros(out_p, w.dtype)
        bias[:out_c] = g.value(node.input[2])
        inputs.append(g.add_initializer(f"{node.name}_b_padded", bias))
    kernel = {"kernel_shape": list(w.shape[2:])}
    if out_p == out_c:
        return [*nodes, _conv(inputs, node.output[0], node.name, node, **kernel)]
    wide_out = g.fresh(f"{node.output[0]}_wide")
    ends = g.add_initializer(f"{node.name}_slice_ends", np.array([out_c], np.int64))
    starts = g.add_initializer(f"{node.name}_slice_starts", np.array([0], np.int64))
    axes = g.add_initializer(f"{node.name}_slice_axes", np.array([1], np.int64))
    return [*nodes, _conv(inputs, wide_out, node.name, node, **kernel),
            helper.make_node("Slice", [wide_out, starts, ends, axes], [node.output[0]],
                             name=g.fresh(f"{node.name}_slice"))]


def fit_convs_to_mlas(model: onnx.ModelProto, skip: Iterable[str] = ()) -> list[str]:
    """Rewrite ``model`` in place so every group-1 Conv not in ``skip`` fits ConvSym; returns what changed."""
    skip = set(skip)
    g = GraphEdit(model)
    done: list[str] = []
    replaced_params: set[str] = set()
    nodes = list(g.graph.node)
    for rewrite, what in ((factor_single_output, "one output channel → per-tap 1×1 + one-hot sum"),
                          (pad_channels, "channels padded for MLAS")):
        out: list[onnx.NodeProto] = []
        for node in nodes:
            replacement = None if node.name in skip else rewrite(g, node)
            out.extend(replacement or [node])
            if replacement:
                done.append(f"{node.name}: {what}")
                replaced_params.update(node.input[1:])
        nodes = out
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input}
    kept = [i for i in g.graph.initializer if i.name in used or i.name not in replaced_params]
    del g.graph.initializer[:]
    g.graph.initializer.extend(kept)
    return done


def convsym_misfits(model: onnx.ModelProto) -> list[str]:
    """Group-1 Convs whose shapes keep them off MLAS ConvSym (what :func:`fit_convs_to_mlas` fixes)."""
    g = GraphEdit(model)
    misfits = []
    for node in g.graph.node:
        w = _plain_conv(g, node)
        if w is not None and (w.shape[1] % INPUT_ALIGN or w.shape[0] < OUTPUT_MIN or w.shape[0] % OUTPUT_ALIGN):
            misfits.append(f"{node.name} {list(w.shape)}")
    return misfits


def shared_concat_ranges(model: onnx.ModelProto, ranges: Ranges) -> Ranges:
    """``ranges`` with every Concat's inputs and output (and what shares their quantization) set to their union."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        root = a
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    for node in model.graph.node:
        if node.op_type == "Concat":
            for name in node.input:
                union(name, node.output[0])
        elif node.op_type in SAME_QUANTIZATION_OPS and node.input and node.output:
            union(node.input[0], node.output[0])
    groups: dict[str, list[str]] = {}
    for name in parent:
        if name in ranges:
            groups.setdefault(find(name), []).append(name)
    shared = dict(ranges)
    for members in groups.values():
        lo = min(ranges[m][0] for m in members)
        hi = max(ranges[m][1] for m in members)
        for m in members:
            shared[m] = (lo, hi)
    return shared
