"""Rewrites of the quantized graph for ONNX Runtime's CPU kernels: same numbers, other kernels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from u2deploy.calibration import qdq_rewrites

SHAPE = [1, 1, 6, 7]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())


def _params(scale: float, zero: int, suffix: str) -> tuple[list[onnx.TensorProto], list[str]]:
    names = [f"s{suffix}", f"z{suffix}"]
    values = [numpy_helper.from_array(np.float32(scale), names[0]), numpy_helper.from_array(np.uint8(zero), names[1])]
    return values, names


def _concat_net(scales: tuple[float, float, float], head: str = "dq", fusion: dict | None = None) -> onnx.ModelProto:
    """Three float maps → Q → DQ → Concat → Q (third scale) → DQ [→ 1×1 conv ``fusion`` → Sigmoid]."""
    inits, nodes, inputs = [], [], []
    for k, scale in enumerate(scales[:2]):
        p_init, p = _params(scale, 3, str(k))
        inits += p_init
        inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, SHAPE))
        nodes += [helper.make_node("QuantizeLinear", [f"x{k}", *p], [f"q{k}"], name=f"q{k}"),
                  helper.make_node("DequantizeLinear", [f"q{k}", *p], [f"d{k}"], name=f"dq{k}")]
    p_init, p = _params(scales[2], 3, "c")
    inits += p_init
    nodes += [helper.make_node("Concat", ["d0", "d1"], ["cat"], name="cat", axis=1),
              helper.make_node("QuantizeLinear", ["cat", *p], ["cat_q"], name="cat_q"),
              helper.make_node("DequantizeLinear", ["cat_q", *p], ["cat_d"], name="cat_dq")]
    out = "cat_d"
    if head == "fusion":
        fusion = fusion or {}
        w = np.array(fusion.get("w", [[[[0.7]], [[-1.3]]]]), np.float32)
        bias = np.full(w.shape[0], 0.25, np.float32)
        inits += [numpy_helper.from_array(w, "fw"), numpy_helper.from_array(bias, "fb")]
        attrs = {k: v for k, v in fusion.items() if k != "w"}
        nodes += [helper.make_node("Conv", ["cat_d", "fw", "fb"], ["fused"], name="fusion", kernel_shape=[1, 1],
                                   **attrs),
                  helper.make_node("Sigmoid", ["fused"], ["y"], name="sigmoid")]
        out = "y"
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", "c", "h", "w"])]
    graph = helper.make_graph(nodes, "net", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture()
def feeds(rng) -> dict[str, np.ndarray]:
    return {f"x{k}": (rng.standard_normal(SHAPE) * 2).astype(np.float32) for k in range(2)}


def test_a_concat_with_one_scale_becomes_an_integer_concat(feeds):
    model = _concat_net((0.02, 0.02, 0.02))
    rewritten = _copy(model)
    assert qdq_rewrites.integer_concats(rewritten) == ["cat: integer Concat"]
    onnx.checker.check_model(rewritten)
    concat = next(n for n in rewritten.graph.node if n.op_type == "Concat")
    assert list(concat.input) == ["q0", "q1"] and list(concat.output) == ["cat_q"]
    assert [n.op_type for n in rewritten.graph.node].count("DequantizeLinear") == 1  # the ones it fed are gone
    for optimize in (True, False):
        np.testing.assert_array_equal(_run(rewritten, feeds, optimize), _run(model, feeds, optimize))


@pytest.mark.parametrize("scales", [(0.02, 0.03, 0.02), (0.02, 0.02, 0.025)])
def test_a_concat_that_requantizes_is_left_alone(scales):
    model = _concat_net(scales)
    rewritten = _copy(model)
    assert qdq_rewrites.integer_concats(rewritten) == []
    assert rewritten == model


def test_the_fusion_conv_becomes_a_weighted_sum(feeds):
    model = _concat_net((0.02, 0.02, 0.02), head="fusion")
    rewritten = _copy(model)
    changed = qdq_rewrites.for_ort_cpu(rewritten)
    assert changed == ["cat: integer Concat", "fusion: weighted sum of its 2 maps"]
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Conv" not in ops and "Concat" not in ops and ops.count("Mul") == 2 and ops.count("Sum") == 1
    np.testing.assert_allclose(_run(rewritten, feeds), _run(model, feeds), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fusion", [
    {"w": [[[[0.7]], [[-1.3]]], [[[0.1]], [[0.2]]]]},  # two output channels
    {"pads": [1, 1, 1, 1]},
    {"strides": [2, 2]},
])
def test_other_convs_over_a_concat_are_left_alone(feeds, fusion):
    model = _concat_net((0.02, 0.02, 0.02), head="fusion", fusion=fusion)
    rewritten = _copy(model)
    assert qdq_rewrites.for_ort_cpu(rewritten) == ["cat: integer Concat"]
    assert "Conv" in [n.op_type for n in rewritten.graph.node]
    np.testing.assert_array_equal(_run(rewritten, feeds), _run(model, feeds))
