"""The model for onnxruntime-web's WebGPU backend: U²-Net's ``ceil_mode=1`` max-pools, made floor pools.

The JSEP WebGPU MaxPool of onnxruntime-web rejects ``ceil_mode=1`` ("ceil_mode kernel execution
(padding) is not yet implemented"). Where a pooled map's size makes ceil and floor agree (``(in + pads -
window) % stride == 0`` on both axes: every pooled map even, as at 320×320 or 64×64), ``ceil_mode=0``
computes the same numbers, so the rewrite is exact and the model runs on either WebGPU implementation.
Where they do not agree (160×160 pools a 5×5 map), the export is refused with the node and the size: a
ceil pool over a partial window is unverified on WebGPU. The rewritten graph is checked against the
artifact in ONNX Runtime before it is written.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, shape_inference

from ...errors import U2Error


def floor_pools(model: onnx.ModelProto, size: tuple[int, int], source: str) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every ``ceil_mode=1`` MaxPool set to 0, and how many there were."""
    shapes = _shapes_at(model, size)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    changed = 0
    for node in out.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type != "MaxPool" or "ceil_mode" not in attrs or attrs["ceil_mode"].i == 0:
            continue
        hw = shapes.get(node.input[0])
        if hw is None:
            raise U2Error(f"{source}: cannot tell the map size that MaxPool {node.name} pools, so its ceil_mode=1 "
                          "cannot be proven safe to drop for WebGPU; leave out --webgpu")
        kernel = list(helper.get_attribute_value(attrs["kernel_shape"]))
        strides = list(helper.get_attribute_value(attrs["strides"])) if "strides" in attrs else [1, 1]
        pads = list(helper.get_attribute_value(attrs["pads"])) if "pads" in attrs else [0, 0, 0, 0]
        dilations = list(helper.get_attribute_value(attrs["dilations"])) if "dilations" in attrs else [1, 1]
        for axis in (0, 1):
            window = (kernel[axis] - 1) * dilations[axis] + 1
            if (hw[axis] + pads[axis] + pads[axis + 2] - window) % strides[axis]:
                raise U2Error(
                    f"{source}: MaxPool {node.name} pools a {hw[0]}×{hw[1]} map with ceil_mode=1, which "
                    "onnxruntime-web's WebGPU MaxPool does not implement (JSEP) or is unverified on, and a floor "
                    "pool would give a smaller map; export at a size whose pooled maps are all even (u2export onnx "
                    "--size 320) or leave out --webgpu (WASM runs it as it is)")
        attrs["ceil_mode"].i = 0
        changed += 1
    return out, changed


def _shapes_at(model: onnx.ModelProto, size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """H×W of every 4-D value when the input is 1×3×size (the size the site runs at)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, *size)):
        dim.Clear()
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(fixed)
    shapes: dict[str, tuple[int, int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info]:
        d = vi.type.tensor_type.shape.dim
        if len(d) == 4 and d[2].HasField("dim_value") and d[3].HasField("dim_value"):
            shapes[vi.name] = (d[2].dim_value, d[3].dim_value)
    return shapes


def check_same(original: onnx.ModelProto, rewritten: onnx.ModelProto, size: tuple[int, int], source: str) -> float:
    """max|Δ| of the first output, original against rewritten, on one fixed random input in ONNX Runtime."""
    from ...ort_session import cpu_session, run_first_output

    x = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
    a = run_first_output(cpu_session(original), x)
    b = run_first_output(cpu_session(rewritten), x)
    delta = float(np.max(np.abs(a - b)))
    if a.shape != b.shape or delta > 1e-6:
        raise U2Error(f"{source}: the WebGPU rewrite (floor max-pools) changes the output (max|Δ| {delta:.2g}); "
                      "leave out --webgpu")
    return delta
