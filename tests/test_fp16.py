"""FP16: the conversion pass (types, casts, FP32 islands), its emulation, `u2export fp16`, and parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from u2deploy.cli.export import app
from u2deploy.errors import U2Error
from u2deploy.export.fp16 import (
    FP16_MAX,
    OVERFLOW_MARGIN,
    activation_ranges,
    choose_fp32_nodes,
    convert_fp16,
    convert_model,
    emulation_model,
)


def _run(model: onnx.ModelProto, x: np.ndarray, optimise: bool = True) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _resize_graph(gain: float = 1.0) -> onnx.ModelProto:
    """x → Conv → Mul(gain) → Resize(×2, scales) → Relu → Sigmoid: Resize's scales must stay float32."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.float32(gain), "gain"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "gain"], ["m"], name="mul"),
             helper.make_node("Resize", ["m", "", "scales"], ["r"], name="resize", mode="linear"),
             helper.make_node("Relu", ["r"], ["a"], name="relu"),
             helper.make_node("Sigmoid", ["a"], ["y"], name="sigmoid")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conversion_types_and_numbers():
    model = _resize_graph()
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    reference = _run(model, x)
    keep = choose_fp32_nodes(model, activation_ranges(model, x))
    assert keep == {"sigmoid": "makes a graph output"}
    half = convert_model(onnx.ModelProto.FromString(model.SerializeToString()), keep)
    onnx.checker.check_model(half, full_check=True)
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["scales"] == TensorProto.FLOAT and inits["w__fp16"] == TensorProto.FLOAT16
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert [n.op_type for n in half.graph.node].count("Cast") == 2  # into the FP16 region, out before Sigmoid
    emulated = _run(emulation_model(model, keep), x, optimise=False)
    got = _run(half, x)
    assert 0 < np.abs(emulated - reference).max() < 2e-3
    assert np.abs(got - reference).max() < 2e-3


def test_emulation_of_nothing_is_the_fp32_graph():
    model = _resize_graph()
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    everything = [n.name for n in model.graph.node]
    np.testing.assert_array_equal(_run(emulation_model(model, everything), x, optimise=False),
                                  _run(model, x, optimise=False))


def test_nodes_near_fp16_overflow_stay_fp32_with_their_readers():
    big = FP16_MAX / OVERFLOW_MARGIN * 10
    model = _resize_graph(gain=big)
    x = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    keep = choose_fp32_nodes(model, activation_ranges(model, x))
    assert {"mul", "resize"} <= keep.keys() and "near FP16's 65504" in keep["mul"]
    assert "conv" not in keep
    half = convert_model(onnx.ModelProto.FromString(model.SerializeToString()), keep)
    assert np.isfinite(_run(half, x)).all()


def test_cli_converts_with_metadata_and_refuses_bad_inputs(small_onnx, tmp_path):
    """On trained weights: random ones amplify FP16 rounding through 119 convs into a CPU-dependent 2 %."""
    from u2deploy.validate import tolerance_for

    out = tmp_path / "half.onnx"
    result = CliRunner().invoke(app, ["fp16", str(small_onnx), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "emulated FP16 max|Δ|" in result.output and "bound mean|Δ| ≤ 0.002: pass" in result.output
    assert "next: u2bench latency" in result.output
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "fp16" and meta["input_size"] == "64x64"
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    sidecar = json.loads(Path(f"{out}.json").read_text())
    verification = sidecar["verification"]
    assert verification["passed"] is True and verification["bound"]["mean_abs"] == tolerance_for("fp16").mean_abs
    for check in ("emulated fp16", "onnxruntime cpu"):
        assert verification["checks"][check]["mean_abs"] <= tolerance_for("fp16").mean_abs
    # the ranges were measured on other images than those verified on
    measured_on = sidecar["activation_ranges_measured_on"]
    assert verification["images"]["count"] == 8 and measured_on != verification["images"]["description"]
    assert sidecar["max_abs_activation"] < FP16_MAX / OVERFLOW_MARGIN

    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"not onnx")
    for source, words in ((out, "FP16 model"), (junk, "not an ONNX file"), (tmp_path / "none.onnx", "no such")):
        target = tmp_path / "again.onnx"
        result = CliRunner().invoke(app, ["fp16", str(source), "-o", str(target)])
        assert isinstance(result.exception, U2Error), result.output
        assert words in str(result.exception) and "\n" not in str(result.exception)
        assert not target.exists()


def test_convert_fp16_keeps_the_builders_signature(small_onnx, tmp_path):
    path = convert_fp16(small_onnx, tmp_path / "built.onnx")
    assert path == tmp_path / "built.onnx" and path.is_file()


@pytest.mark.slow
@pytest.mark.isa
def test_fp16_parity_with_pytorch_on_ecssd(tmp_path):
    from test_quantize import _demo_available, ecssd_deltas
    from u2deploy.export.onnx import export_onnx
    from u2deploy.validate import tolerance_for

    if not _demo_available():
        pytest.skip("needs ../shared/datasets/ECSSD and the demo weights")
    source = export_onnx("small", None, tmp_path / "demo.onnx", n_verify=2).path
    # 4 images in the AVX2 lane: FP16 under QEMU is its slowest inference (~40 s an image at 160×160)
    d_maxf, d_mae = ecssd_deltas(convert_fp16(source, tmp_path / "demo_fp16.onnx"), lane_images=4)
    bound = tolerance_for("fp16")
    assert d_maxf <= bound.delta_maxf and d_mae <= bound.delta_mae, (d_maxf, d_mae)
