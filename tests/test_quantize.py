"""INT8: the TensorRT Q/DQ rule checker on hand-built graphs, and `u2export quantize` end to end.

The end-to-end tests quantize the demo weights exported at 64×64 (``small_onnx``) and calibrate on a
few generated images: every written graph is verified at the INT8 map bound, which random weights,
amplifying int8 rounding through 119 convolutions, do not meet. The parity test uses the demo weights
at their native size on held-out ECSSD, and skips without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from conftest import held_out
from u2deploy.calibration import qdq_rules
from u2deploy.calibration.quantize import dedicate_qdq_pairs, quantize, quantize_model
from u2deploy.cli.export import app
from u2deploy.errors import U2Error

# --- the rule checker on tiny graphs: X → Q → DQ → Conv(W: int8 DQ, per-channel, float bias) → Relu → Sigmoid


def _tiny(opset: int = 17, q_domain: str = "", zp_type: int = TensorProto.INT8, zp: int = 0,
          scale: float = 0.02, act_scale_channels: int = 1, weight_axis: int = 0, int32_bias: bool = False,
          q_into_relu: bool = False, shared_dq: bool = False, dq_into_sigmoid: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    np_zp = np.int8 if zp_type == TensorProto.INT8 else np.uint8
    act_scale = np.full(act_scale_channels, scale, np.float32) if act_scale_channels > 1 else np.float32(scale)
    act_zp = np.full(act_scale_channels, zp, np_zp) if act_scale_channels > 1 else np.array(zp, np_zp)
    inits = [numpy_helper.from_array(w, "w_q"),
             numpy_helper.from_array(np.full(4 if weight_axis == 0 else 3, 0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(4 if weight_axis == 0 else 3, np.int8), "w_zp"),
             numpy_helper.from_array(act_scale, "x_scale"), numpy_helper.from_array(act_zp, "x_zp")]
    act_axis = {"axis": 1} if act_scale_channels > 1 else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q_x", domain=q_domain,
                              **act_axis),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq_x",
                              domain=q_domain, **act_axis),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=weight_axis)]
    if int32_bias:
        inits += [numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 2e-4, np.float32), "b_scale"),
                  numpy_helper.from_array(np.zeros(4, np.int32), "b_zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="dq_b", axis=0))
    else:
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "b"))
    conv_in = "x_q" if q_into_relu else "x_dq"
    if q_into_relu:
        nodes.append(helper.make_node("Relu", ["x_q"], ["x_relu"], name="relu_on_q"))
    nodes.append(helper.make_node("Conv", [conv_in if not q_into_relu else "x_dq", "w", "b"], ["y"],
                                  name="conv", pads=[1, 1, 1, 1]))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])]
    if shared_dq:
        nodes.append(helper.make_node("Conv", ["x_dq", "w2", "b2"], ["y2"], name="conv2"))
        inits += [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w2"),
                  numpy_helper.from_array(np.zeros(4, np.float32), "b2")]
        nodes.append(helper.make_node("Add", ["y", "y2"], ["y_sum"], name="add"))
        nodes.append(helper.make_node("Relu", ["y_sum"], ["r"], name="relu"))
    else:
        nodes.append(helper.make_node("Relu", ["y"], ["r"], name="relu"))
    if dq_into_sigmoid:
        inits += [numpy_helper.from_array(np.float32(0.05), "r_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "r_zp")]
        nodes += [helper.make_node("QuantizeLinear", ["r", "r_scale", "r_zp"], ["r_q"], name="q_r"),
                  helper.make_node("DequantizeLinear", ["r_q", "r_scale", "r_zp"], ["r_dq"], name="dq_r")]
        nodes.append(helper.make_node("Sigmoid", ["r_dq"], ["out"], name="sigmoid"))
    else:
        nodes.append(helper.make_node("Sigmoid", ["r"], ["out"], name="sigmoid"))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              outputs, inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(q_domain, 1)] if q_domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_a_graph_that_follows_the_rules_passes():
    model = _tiny()
    assert qdq_rules.check_qdq(model) == []
    assert "follows TensorRT's explicit-quantization rules (1 Q, 2 DQ)" in qdq_rules.report([], "tiny", model)
    import onnxruntime as ort  # and it is a valid graph that runs

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})[0].shape == (1, 4, 8, 8)


@pytest.mark.parametrize("rule, changes", [
    ("opset", {"opset": 21}),
    ("domain", {"q_domain": "com.microsoft"}),
    ("int8", {"zp_type": TensorProto.UINT8, "zp": 128}),
    ("symmetric", {"zp": 3}),
    ("scale", {"scale": -0.5}),
    ("per-tensor-activations", {"act_scale_channels": 3}),
    ("per-channel-axis", {"weight_axis": 1}),
    ("bias", {"int32_bias": True}),
    ("pairs", {"q_into_relu": True}),
    ("dedicated", {"shared_dq": True}),
    ("float-output", {"dq_into_sigmoid": True}),
])
def test_each_broken_rule_is_reported(rule, changes):
    found = qdq_rules.check_qdq(_tiny(**changes))
    assert rule in {v.rule for v in found}, found
    text = qdq_rules.report(found, "tiny")
    assert f"[{rule}]" in text and "violation" in text


def test_dedicating_pairs_fixes_a_shared_dq_without_changing_numbers():
    import onnxruntime as ort

    model = _tiny(shared_dq=True)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert dedicate_qdq_pairs(model) == 1
    assert qdq_rules.check_qdq(model) == []
    onnx.checker.check_model(model)
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(before[0], after[0])


def test_checker_on_a_file_and_on_junk(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny(zp=5), str(path))
    assert {v.rule for v in qdq_rules.check_qdq(path)} == {"symmetric"}
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(U2Error, match="not an ONNX model"):
        qdq_rules.check_qdq(junk)


# --- end to end on a small random model ------------------------------------------------------------


@pytest.fixture(scope="session")
def trt_model(small_onnx, calib_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "small64_int8_trt.onnx"
    return quantize(small_onnx, calib_dir, out, target="tensorrt", num=6, progress=False)


def test_tensorrt_target_passes_the_checker_and_keeps_metadata(trt_model, small_onnx):
    model = onnx.load(str(trt_model))
    assert qdq_rules.check_qdq(model) == []
    meta = {p.key: p.value for p in model.metadata_props}
    source = {p.key: p.value for p in onnx.load(str(small_onnx)).metadata_props}
    assert meta["precision"] == "int8" and meta["quant_target"] == "tensorrt"
    assert meta["calibration"].startswith("method=minmax,images=6,seed=0")
    assert meta["variant"] == source["variant"] and meta["input_size"] == "64x64"
    sidecar = json.loads(Path(f"{trt_model}.json").read_text())
    assert sidecar["tensorrt_qdq_rules"] == "pass" and sidecar["verification"]["nonfinite"] == 0
    assert sidecar["verification"]["passed"] is True and sidecar["verification"]["bound"]["mean_abs"] == 0.01
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer[model.graph.output[0].name].op_type == "Sigmoid"  # the head stays float
    assert all(n.op_type != "DequantizeLinear" or n.input[0] != "" for n in model.graph.node)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_cpu_target_reuses_the_cache_and_checks_qdq(small_onnx, calib_dir, trt_model, tmp_path):
    out = tmp_path / "cpu.onnx"
    result = _invoke("quantize", str(small_onnx), "--calib", str(calib_dir), "--num", "6", "--target", "cpu",
                     "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "ranges from" in result.output  # the trt_model run's cache
    hint = result.output.rsplit("next: ", 1)[1].split()
    assert hint[:2] == ["u2bench", "latency"]  # and the hint runs as printed
    from u2deploy.cli.bench import app as bench_app

    ran = CliRunner().invoke(bench_app, [*hint[1:], "--warmup-s", "0", "--min-time-s", "0.1"])
    assert ran.exit_code == 0, ran.output
    assert out.is_file() and Path(f"{out}.json").is_file()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["quant_target"] == "cpu"
    ok = _invoke("check-qdq", str(trt_model))
    assert ok.exit_code == 0 and "follows TensorRT" in ok.output
    bad = _invoke("check-qdq", "--rules", "tensorrt", str(out))  # uint8 activations: fine for ORT, not TensorRT
    assert bad.exit_code == 1 and "[int8]" in bad.output


def test_exclude_keeps_a_node_float_and_unknown_names_are_refused(small_onnx, calib_dir, tmp_path):
    model = onnx.load(str(small_onnx))
    conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    out = quantize_model(small_onnx, calib_dir, tmp_path / "ex.onnx", target="tensorrt", num=6,
                         exclude=[conv], progress=False)
    quantized = onnx.load(str(out.path))
    node = next(n for n in quantized.graph.node if n.name == conv)
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    assert producers.get(node.input[1]) != "DequantizeLinear" and conv in out.excluded
    with pytest.raises(U2Error, match="--exclude nope: no node"):
        quantize_model(small_onnx, calib_dir, tmp_path / "ex2.onnx", num=6, exclude=["nope"], progress=False)
    assert not (tmp_path / "ex2.onnx").exists()


def test_bad_inputs_are_one_line_errors_and_leave_nothing(small_onnx, calib_dir, trt_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    not_onnx = tmp_path / "model.pth"
    not_onnx.write_bytes(b"PK\x03\x04 a torch checkpoint")
    junk_onnx = tmp_path / "junk.onnx"
    junk_onnx.write_bytes(b"\x00\xff" * 64)
    cases = [
        ((small_onnx, empty), "no image files"),
        ((small_onnx, tmp_path / "missing"), "no such folder"),
        ((not_onnx, calib_dir), "not an ONNX file"),
        ((junk_onnx, calib_dir), "not an ONNX model"),
        ((trt_model, calib_dir), "already quantized"),
    ]
    for i, ((model, calib), words) in enumerate(cases):
        out = tmp_path / f"out{i}.onnx"
        result = _invoke("quantize", str(model), "--calib", str(calib), "-o", str(out))
        assert isinstance(result.exception, U2Error), (words, result.output)
        assert words in str(result.exception) and "\n" not in str(result.exception)
        assert not out.exists() and not Path(f"{out}.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "junk.onnx", "model.pth"]


def test_a_cache_for_other_images_is_refused_then_recalibrated(small_onnx, calib_dir, tmp_path):
    cache = tmp_path / "ranges.json"
    quantize_model(small_onnx, calib_dir, tmp_path / "a.onnx", num=3, seed=0, cache=cache, progress=False)
    with pytest.raises(U2Error, match="other images"):
        quantize_model(small_onnx, calib_dir, tmp_path / "b.onnx", num=3, seed=1, cache=cache, progress=False)
    assert not (tmp_path / "b.onnx").exists()
    again = quantize_model(small_onnx, calib_dir, tmp_path / "b.onnx", num=3, seed=1, cache=cache,
                           recalibrate=True, progress=False)
    assert again.calibration is not None and again.path.is_file()


def test_sensitivity_reports_every_conv(small_onnx, trt_model, calib_dir):
    from u2deploy.calibration.sensitivity import report, sensitivity

    errors = sensitivity(small_onnx, trt_model, calib_dir, n=2)
    convs = [n for n in onnx.load(str(small_onnx)).graph.node if n.op_type == "Conv"]
    assert len(errors) == len(convs)
    assert all(np.isfinite(e.sqnr_db) and e.max_abs >= 0 for e in errors)
    assert "--exclude NODE" in report(errors)



# --- parity against PyTorch on held-out ECSSD (demo weights, native size) ------------------------------


def _demo_available() -> bool:
    from u2deploy.data.samples import ecssd_root
    from u2deploy.model.registry import DEMO_NAME, WEIGHTS_DIR

    return ecssd_root() is not None and (WEIGHTS_DIR / f"{DEMO_NAME}.pth").is_file()


needs_ecssd = pytest.mark.skipif(not _demo_available(), reason="needs ../shared/datasets/ECSSD and the demo weights")


def ecssd_deltas(candidate: Path, n: int = 16, lane_images: int = 6) -> tuple[float, float]:
    """(ΔmaxFβ, ΔMAE) of ``candidate`` against PyTorch FP32 on ``n`` held-out ECSSD images, at GT size.

    The candidate runs in ONNX Runtime's runner, a session with default options as users run it (on the emulated
    CPU under `nox -s avx2`).
    """
    import torch

    from u2deploy.bench.evaluate import evaluate_maps, read_map
    from u2deploy.data import postprocess, preprocess
    from u2deploy.data.images import read_image
    from u2deploy.engines import open_runner
    from u2deploy.model.weights import load_model

    pairs = list(held_out(n, lane_images))
    images, gts = [read_image(p.image) for p in pairs], [read_map(p.mask) for p in pairs]
    loaded = load_model("small", None)
    x = preprocess.fast(images, loaded.info.input_size, loaded.info.mean, loaded.info.std)
    with torch.inference_mode():
        ref = loaded.net.eval()(torch.from_numpy(x))[0].numpy()
    with open_runner(str(candidate)) as runner:
        got = np.concatenate([runner.saliency(x[i:i + 1]) for i in range(len(x))])
    sizes = [im.shape[:2] for im in images]
    r, c = evaluate_maps(postprocess.fast(ref, sizes), gts), evaluate_maps(postprocess.fast(got, sizes), gts)
    return abs(c["maxF"] - r["maxF"]), abs(c["mae"] - r["mae"])


@needs_ecssd
@pytest.mark.slow
@pytest.mark.parametrize("target", [pytest.param("cpu", marks=pytest.mark.isa), "tensorrt"])
def test_int8_parity_with_pytorch_on_ecssd(demo_onnx, ecssd_calib, target, tmp_path, request):
    """All 200 held-out images (6 in the AVX2 lane), 300 calibration images, the table's INT8 bounds (map
    mean|Δ| too); both targets calibrate once, through one ranges cache.

    The cpu artifact is saturation-free (proven in test_saturation), so its numbers are the same on
    every x86 CPU; the tensorrt one runs as TensorRT computes it, Q/DQ emulated in float.
    """
    from u2deploy.bench.parity import run_parity
    from u2deploy.engines import open_runner
    from u2deploy.validate import tolerance_for

    artifact = request.getfixturevalue("demo_int8_cpu") if target == "cpu" else quantize_model(
        demo_onnx, ecssd_calib, tmp_path / f"demo_{target}.onnx", target=target, num=300,
        cache=demo_onnx.with_name("demo.calib.json"), progress=False).path
    with open_runner("torch:small") as reference:
        report = run_parity(reference, [str(artifact)], held_out(), progress=False)
    row = report.rows[1]
    assert row.evaluation.backend == ("onnxruntime" if target == "cpu" else "onnxruntime (TensorRT emulated)")
    assert row.passed, row.reason
    assert row.mean_abs <= tolerance_for("int8").mean_abs == 0.01
    assert report.to_json()["results"][1]["map_mean_abs"] == pytest.approx(row.mean_abs, abs=1e-6)
    if target == "cpu":  # and in a session with default options, as users and rembg run it
        d_maxf, d_mae = ecssd_deltas(artifact)
        bound = tolerance_for("int8")
        assert d_maxf <= bound.delta_maxf and d_mae <= bound.delta_mae, (d_maxf, d_mae)


def test_the_default_target_suits_the_machine(monkeypatch):
    import importlib.util

    from u2deploy import hardware
    from u2deploy.calibration.quantize import default_target

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert default_target() == ("cpu", "no TensorRT here")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(hardware, "gpu", lambda: None)
    assert default_target() == ("cpu", "no CUDA GPU here")
    monkeypatch.setattr(hardware, "gpu", lambda: {"name": "H200"})
    assert default_target()[0] == "tensorrt"


def test_ctrl_c_keeps_minmax_ranges_and_a_rerun_resumes_to_the_same_ranges(small_onnx, calib_dir, tmp_path,
                                                                        monkeypatch):
    from u2deploy.calibration import calibrate as calibrate_module
    from u2deploy.errors import Interrupted

    real_reader, calls = calibrate_module._reader, []

    def stop_at_the_fourth(batches, input_name):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_reader(batches, input_name)

    cache, out = tmp_path / "r.calib.json", tmp_path / "r.onnx"
    monkeypatch.setattr(calibrate_module, "_reader", stop_at_the_fourth)
    with pytest.raises(Interrupted, match="ranges of 3 of 6 calibration images kept in .*the same command resumes"):
        quantize_model(small_onnx, calib_dir, out, target="cpu", num=6, cache=cache, progress=False)
    assert not out.exists() and not cache.exists()
    assert json.loads(Path(f"{cache}.partial").read_text())["images_done"] == 3
    monkeypatch.setattr(calibrate_module, "_reader", real_reader)
    resumed = quantize_model(small_onnx, calib_dir, out, target="cpu", num=6, cache=cache, progress=False)
    assert resumed.calibration is not None and not Path(f"{cache}.partial").exists()
    fresh = tmp_path / "fresh.calib.json"
    quantize_model(small_onnx, calib_dir, tmp_path / "f.onnx", target="cpu", num=6, cache=fresh,
                   progress=False)
    assert json.loads(cache.read_text())["ranges"] == json.loads(fresh.read_text())["ranges"]

    # Interrupted after the last image: the rerun has nothing left to read and keeps the ranges.
    from u2deploy.calibration.cache import CacheKey, save_partial

    stored = json.loads(cache.read_text())
    ranges = {name: tuple(r) for name, r in stored["ranges"].items()}
    save_partial(cache, CacheKey(**stored["key"]), 6, ranges)
    cache.unlink()
    again = quantize_model(small_onnx, calib_dir, tmp_path / "g.onnx", target="cpu", num=6, cache=cache,
                           progress=False)
    assert again.path.is_file() and json.loads(cache.read_text())["ranges"] == stored["ranges"]
