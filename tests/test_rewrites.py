"""The CPU INT8 rewrites: exact in float, every conv on MLAS ConvSym's shapes, every Concat a copy.

Speed is not asserted here (benchmarks print it: ``u2bench latency --paired``); what is asserted is
what makes it fast: the shapes ConvSym needs and equal quantization parameters around each Concat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from u2deploy.calibration import rewrites


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())


def _conv_net(rng: np.random.Generator, head_attrs: dict | None = None, head_bias: bool = True) -> onnx.ModelProto:
    """x(3ch) → Conv 3→8 → Relu → Conv 8→1 (k×k, ``head_attrs``) → Sigmoid: both convs miss ConvSym."""
    head_attrs = head_attrs or {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    k = head_attrs["kernel_shape"]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((1, 8, *k)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([0.3], np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="first", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2", *(["b2"] if head_bias else [])], ["c2"], name="side", **head_attrs),
             helper.make_node("Sigmoid", ["c2"], ["y"], name="sigmoid")]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 11, 13])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("head_attrs, head_bias", [
    (None, True),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0]}, True),
    ({"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 2, 2, 2]}, True),
    ({"kernel_shape": [1, 3], "pads": [0, 1, 0, 1]}, True),
])
def test_rewrites_are_exact_and_fit_convsym(rng, head_attrs, head_bias):
    model = _conv_net(rng, head_attrs, head_bias)
    x = rng.standard_normal((1, 3, 11, 13)).astype(np.float32)
    rewritten = _copy(model)
    changed = rewrites.fit_convs_to_mlas(rewritten)
    onnx.checker.check_model(rewritten)
    assert len(rewrites.convsym_misfits(model)) == 2 and rewrites.convsym_misfits(rewritten) == []
    assert any(c.startswith("side: one output channel") for c in changed)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=0, atol=2e-6)
    names = {i.name for i in rewritten.graph.initializer}
    assert "w2" not in names and "w1" not in names  # the replaced weights are gone, not duplicated


def test_skipped_nodes_are_left_alone(rng):
    model = _conv_net(rng)
    rewritten = _copy(model)
    changed = rewrites.fit_convs_to_mlas(rewritten, skip=["side"])
    assert [c.split(":")[0] for c in changed] == ["first"]
    side = next(n for n in rewritten.graph.node if n.name == "side")
    assert side.input[1] == "w2" and rewrites.convsym_misfits(rewritten) == ["side [1, 8, 3, 3]"]


def test_shared_concat_ranges_follow_resize_and_leave_the_rest():
    nodes = [helper.make_node("Resize", ["a", "", "s"], ["a_up"], mode="linear"),
             helper.make_node("Concat", ["a_up", "b"], ["cat"], axis=1),
             helper.make_node("Relu", ["b"], ["b_relu"])]
    graph = helper.make_graph(nodes, "g", [], [])
    ranges = {"a": (0.0, 2.0), "a_up": (0.0, 1.5), "b": (-1.0, 4.0), "cat": (-1.0, 4.0), "b_relu": (0.0, 4.0)}
    shared = rewrites.shared_concat_ranges(helper.make_model(graph), ranges)
    assert {shared[n] for n in ("a", "a_up", "b", "cat")} == {(-1.0, 4.0)}
    assert shared["b_relu"] == (0.0, 4.0) and ranges["a"] == (0.0, 2.0)  # input left unchanged


def test_the_real_network_rewrites_exactly(small_onnx: Path, rng):
    model = onnx.load(str(small_onnx))
    before = rewrites.convsym_misfits(model)
    assert len(before) == 8  # first conv (3 inputs), six side convs and the fusion conv (one output)
    rewritten = _copy(model)
    rewrites.fit_convs_to_mlas(rewritten)
    assert rewrites.convsym_misfits(rewritten) == []
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def cpu_int8(small_onnx: Path, calib_dir: Path, tmp_path_factory) -> Path:
    from u2deploy.calibration.quantize import quantize_model

    out = tmp_path_factory.mktemp("rw") / "small64_int8.onnx"
    return quantize_model(small_onnx, calib_dir, out, target="cpu", num=4, cache=out.with_suffix(".calib.json"),
                          progress=False).path


def _weight_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Quantized convs' weight shapes, read through their DequantizeLinear."""
    init = {i.name: list(i.dims) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    shapes = {}
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if node.op_type == "Conv" else None
        if dq is not None and dq.op_type == "DequantizeLinear":
            shapes[node.name] = init[dq.input[0]]
    return shapes


def test_quantized_cpu_model_has_convsym_shapes_and_integer_concats(cpu_int8: Path):
    model = onnx.load(str(cpu_int8))
    shapes = _weight_shapes(model)
    assert len(shapes) >= 118
    bad = {n: s for n, s in shapes.items() if s[1] % 4 or s[0] < 16 or s[0] % 8}
    assert not bad, bad
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    concats = [n for n in model.graph.node if n.op_type == "Concat"
               and all(producer.get(i) is not None and producer[i].op_type == "QuantizeLinear" for i in n.input)]
    assert len(concats) == 50  # the feature-map concats, on integers; the fusion conv's is now a weighted sum
    for concat in concats:
        quantizers = [producer[i] for i in concat.input]
        params = {(float(init[q.input[1]]), int(init[q.input[2]])) for q in quantizers}
        assert len(params) == 1, (concat.name, params)  # one scale: a copy, no requantization
        assert {n.op_type for n in consumers[concat.output[0]]} == {"DequantizeLinear"}
    assert not [n for n in model.graph.node if n.op_type == "Concat"
                and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)]
    assert [n.op_type for n in model.graph.node].count("Sum") == 1
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["graph_rewrites"] == "mlas_conv_shapes,shared_concat_ranges,ort_cpu_qdq"


def test_cpu_int8_stays_close_to_fp32(cpu_int8: Path, small_onnx: Path, rng):
    x = rng.random((1, 3, 64, 64)).astype(np.float32) * 4 - 2
    a = _run(onnx.load(str(cpu_int8)), x)
    b = _run(onnx.load(str(small_onnx)), x)
    assert np.isfinite(a).all() and np.abs(a - b).mean() < 0.02


def test_sensitivity_reads_every_conv_of_the_integer_graph(cpu_int8: Path, small_onnx: Path, calib_dir: Path):
    """The cpu graph folds each Relu into its conv and concatenates integers: every layer is still found."""
    from u2deploy.calibration.sensitivity import sensitivity

    errors = sensitivity(small_onnx, cpu_int8, calib_dir, n=2)
    convs = [n for n in onnx.load(str(small_onnx)).graph.node if n.op_type == "Conv"]
    assert len(errors) == len(convs)
    assert all(np.isfinite(e.sqnr_db) and e.sqnr_db > 10 for e in errors), min(e.sqnr_db for e in errors)
    no_input = [e.node for e in errors if not np.isfinite(e.drop_db)]
    assert len(no_input) <= 2, no_input  # the first conv (it reads the image) and the fusion conv (its concat is gone)
