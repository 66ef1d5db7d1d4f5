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


def _outputs_all_net(extra_inits: list[onnx.TensorProto] = ()) -> onnx.ModelProto:
    """Like ``--outputs all``: map 0 is also dequantized for its own Sigmoid output; the fused map is an output too."""
    model = _concat_net((0.02, 0.02, 0.02), head="fusion")
    graph = model.graph
    for value in [*graph.input]:
        value.type.tensor_type.shape.dim[2].dim_param, value.type.tensor_type.shape.dim[3].dim_param = "h", "w"
    graph.node.extend([helper.make_node("DequantizeLinear", ["q0", "s0", "z0"], ["side_d"], name="side_dq"),
                       helper.make_node("Sigmoid", ["side_d"], ["side"], name="side_sigmoid")])
    graph.output.extend([helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", "c", "h", "w"])
                         for name in ("side", "fused")])
    # nodes must stay topologically sorted: the side branch goes right after the first Q
    nodes = list(graph.node)
    side = nodes[-2:]
    at = next(i for i, n in enumerate(nodes) if n.name == "q0") + 1
    del graph.node[:]
    graph.node.extend(nodes[:at] + side + nodes[at:-2])
    graph.initializer.extend(extra_inits)
    return model


def _feeds(rng, h: int, w: int) -> dict[str, np.ndarray]:
    return {f"x{k}": (rng.standard_normal([1, 1, h, w]) * 2).astype(np.float32) for k in range(2)}


def test_outputs_all_graph_keeps_its_side_output_and_reuses_its_dequantize(rng):
    model = _outputs_all_net()
    rewritten = _copy(model)
    assert qdq_rewrites.for_ort_cpu(rewritten) == ["cat: integer Concat", "fusion: weighted sum of its 2 maps"]
    onnx.checker.check_model(rewritten, full_check=True)
    dequantizers = [n for n in rewritten.graph.node if n.op_type == "DequantizeLinear"]
    assert sorted(d.input[0] for d in dequantizers) == ["q0", "q1"]  # map 0's DQ is shared, not duplicated
    used = {i for n in rewritten.graph.node for i in n.input}
    assert {i.name for i in rewritten.graph.initializer} <= used  # the conv's weight and bias are gone
    for h, w in ((6, 7), (9, 4)):
        feeds = _feeds(rng, h, w)
        for a, b in zip(_run_all(rewritten, feeds), _run_all(model, feeds), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _run_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_new_names_never_collide_and_initializer_outputs_survive(rng):
    taken = [numpy_helper.from_array(np.float32(7), name) for name in ("fused_b", "fused_w0", "fused_map1")]
    model = _outputs_all_net(taken)
    model.graph.output.append(helper.make_tensor_value_info("fused_b", TensorProto.FLOAT, []))
    rewritten = _copy(model)
    assert len(qdq_rewrites.for_ort_cpu(rewritten)) == 2
    onnx.checker.check_model(rewritten, full_check=True)
    names = [i.name for i in rewritten.graph.initializer]
    assert len(names) == len(set(names)) and "fused_b" in names
    feeds = _feeds(rng, 6, 7)
    for a, b in zip(_run_all(rewritten, feeds), _run_all(model, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _per_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    """The concat's requantization per channel (axis 1, two scales): not one set of parameters."""
    for init in model.graph.initializer:
        if init.name in ("sc", "zc"):
            value = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.repeat(value, 2), init.name))
    for node in model.graph.node:
        if node.name in ("cat_q", "cat_dq"):
            node.attribute.append(helper.make_attribute("axis", 1))
    return model


def _second_consumer(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.node.append(helper.make_node("Identity", ["cat"], ["cat_float"], name="also_float"))
    model.graph.output.append(helper.make_tensor_value_info("cat_float", TensorProto.FLOAT, ["n", "c", "h", "w"]))
    return model


def _int8_zero_point(model: onnx.ModelProto) -> onnx.ModelProto:
    for init in model.graph.initializer:
        if init.name == "zc":
            init.CopyFrom(numpy_helper.from_array(np.int8(3), "zc"))
    return model


@pytest.mark.parametrize("change", [_per_axis, _second_consumer, _int8_zero_point])
def test_concats_that_are_not_plain_copies_are_left_alone(change, feeds):
    model = change(_concat_net((0.02, 0.02, 0.02)))
    onnx.checker.check_model(model)
    rewritten = _copy(model)
    assert qdq_rewrites.integer_concats(rewritten) == []
    assert rewritten == model
