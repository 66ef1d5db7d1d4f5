"""The x86 saturation proof: sound against an emulation of VPMADDUBSW, true of what the quantizer writes.

ONNX Runtime on this machine may or may not saturate (VNNI does not), so the tests never rely on the
CPU they run on: the emulation below does what AVX2's u8×s8 kernels do, for any pairing of weights.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from u2deploy import hardware
from u2deploy.calibration import saturation
from u2deploy.calibration.quantize import RECIPES, quantize_model
from u2deploy.cli.export import app
from u2deploy.errors import U2Error


def vpmaddubsw_dot(x: np.ndarray, w: np.ndarray, order: np.ndarray) -> int:
    """u8 · s8 as AVX2 computes it: adjacent pairs (in ``order``) summed in saturating int16, then int32."""
    xs, ws = x[order].astype(np.int64), w[order].astype(np.int64)
    if len(xs) % 2:
        xs, ws = np.append(xs, 0), np.append(ws, 0)
    pairs = xs[0::2] * ws[0::2] + xs[1::2] * ws[1::2]
    return int(np.clip(pairs, -32768, 32767).sum())


def _saturating_layout(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The worst input for ``w``: its two largest same-sign weights side by side, both at x = 255."""
    w64 = w.astype(np.int64)
    sign = 1 if np.sort(np.where(w64 > 0, w64, 0))[-2:].sum() >= np.sort(np.where(w64 < 0, -w64, 0))[-2:].sum() else -1
    top = np.argsort(-sign * w64)[:2]
    x = np.zeros(len(w), np.uint8)
    x[top] = 255
    return x, np.concatenate([top, np.setdiff1d(np.arange(len(w)), top)])


def test_the_bound_is_sound_and_tight_against_the_emulation():
    rng = np.random.default_rng(0)
    unsafe_seen = 0
    for high in (64, 127):  # 7-bit (reduce_range) and full-range int8 weights
        for _ in range(300):
            w = rng.integers(-high, high + 1, 27).astype(np.int8)
            safe = saturation.U8_MAX * saturation.pair_sums(w[None])[0] <= saturation.INT16_MAX
            assert safe or high == 127
            if safe:  # every input and every pairing gives the exact dot product
                for _ in range(5):
                    x = rng.choice(np.array([0, 255], np.uint8), 27) if rng.random() < 0.5 else \
                        rng.integers(0, 256, 27).astype(np.uint8)
                    assert vpmaddubsw_dot(x, w, rng.permutation(27)) == int(x.astype(np.int64) @ w.astype(np.int64))
            else:  # and where the bound fails, some layout does saturate
                unsafe_seen += 1
                x, order = _saturating_layout(w)
                assert vpmaddubsw_dot(x, w, order) != int(x.astype(np.int64) @ w.astype(np.int64))
    assert unsafe_seen > 100


def test_pair_sums_take_same_sign_pairs_per_output_channel():
    w = np.array([[100, 90, -120, 5], [-70, -60, 127, 0], [127, 0, 0, 0]], np.int8)
    np.testing.assert_array_equal(saturation.pair_sums(w), [190, 130, 127])
    np.testing.assert_array_equal(saturation.pair_sums(w.T, out_axis=-1), [190, 130, 127])
    np.testing.assert_array_equal(saturation.pair_sums(w[:, :, None, None].transpose(1, 0, 2, 3), out_axis=1),
                                  [190, 130, 127])  # ConvTranspose: C_in × C_out × kH × kW


def _qdq_conv(weights: np.ndarray) -> onnx.ModelProto:
    """x (u8 Q/DQ) → Conv(int8 DQ weights) → y."""
    cout = weights.shape[0]
    inits = [numpy_helper.from_array(weights, "w_q"), numpy_helper.from_array(np.full(cout, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(cout, np.int8), "wz"),
             numpy_helper.from_array(np.float32(0.02), "xs"), numpy_helper.from_array(np.uint8(0), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Conv", ["xd", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_check_finds_the_conv_that_can_saturate(tmp_path):
    rng = np.random.default_rng(1)
    safe, unsafe = rng.integers(-64, 65, (8, 4, 3, 3)).astype(np.int8), rng.integers(-127, 128, (8, 4, 3, 3))
    violations, bounds = saturation.check_saturation(_qdq_conv(safe))
    assert violations == [] and len(bounds) == 1 and bounds[0].worst <= saturation.INT16_MAX
    violations, bounds = saturation.check_saturation(_qdq_conv(unsafe.astype(np.int8)))
    assert [v.node for v in violations] == ["conv"] and "VPMADDUBSW" in violations[0].message
    text = saturation.report(violations, bounds, "m.onnx")
    assert "can saturate" in text and "[saturation] conv" in text


def test_onnxruntime_default_8bit_weights_fail_the_check(tmp_path):
    """quantize_static's defaults (full-range s8 weights) are what the AVX2 machine got wrong."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from u2deploy.bench.int8_ceiling import ConvCase, conv_model

    case = ConvCase("c", 16, 8, 16)
    onnx.save(conv_model(case), str(tmp_path / "f.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter([{"x": np.random.default_rng(0).random((1, 16, 16, 16), dtype=np.float32)}])

        def get_next(self):
            return next(self.data, None)

    for reduce_range, ok in ((False, False), (True, True)):
        out = tmp_path / f"q{int(reduce_range)}.onnx"
        quantize_static(str(tmp_path / "f.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=reduce_range)
        result = CliRunner().invoke(app, ["check-qdq", "--rules", "cpu", str(out)])
        assert result.exit_code == (0 if ok else 1), result.output
        assert ("saturation-safe on every x86 CPU" if ok else "can saturate") in result.output


# --- what `u2export quantize --target cpu` writes ------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_model(small_onnx, calib_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sat") / "cpu.onnx"
    return quantize_model(small_onnx, calib_dir, out, target="cpu", num=6, progress=False).path


def test_the_cpu_target_is_saturation_safe_by_default(cpu_model):
    model = onnx.load(str(cpu_model))
    violations, bounds = saturation.check_saturation(model)
    assert violations == [] and len(bounds) >= 100  # every conv of U²-Net†, on integers
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["weight_bits"] == "7" and meta["requires_int8_dot_product"] == "false"
    assert meta["built_on_cpu"].startswith(hardware.cpu()["model"])
    sidecar = json.loads(Path(f"{cpu_model}.json").read_text())
    assert sidecar["cpu_saturation_check"]["nodes_that_can_saturate"] == []
    assert sidecar["built_on"]["isa"] == hardware.cpu()["isa"]
    result = CliRunner().invoke(app, ["check-qdq", str(cpu_model)])  # auto: the model's own target
    assert result.exit_code == 0 and "saturation-safe" in result.output


def test_vnni_only_is_explicit_recorded_and_warned_about(small_onnx, calib_dir, tmp_path, monkeypatch,
                                                         caplog):
    out = tmp_path / "vnni.onnx"
    result = CliRunner().invoke(app, ["quantize", str(small_onnx), "--calib", str(calib_dir), "--num", "6",
                                      "--target", "cpu", "--vnni-only", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "accurate only on CPUs with VNNI" in result.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["weight_bits"] == "8" and meta["requires_int8_dot_product"] == "true"
    assert CliRunner().invoke(app, ["check-qdq", "--rules", "cpu", str(out)]).exit_code == 1

    from u2deploy.engines import open_runner

    monkeypatch.setattr(hardware, "int8_saturates", lambda info=None: True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="u2deploy.engines"), open_runner(str(out)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("u2deploy.engines")]
    assert len(warnings) == 1 and "saturate" in warnings[0] and "without --vnni-only" in warnings[0]
    with pytest.raises(U2Error, match="--vnni-only applies to --target cpu"):
        quantize_model(small_onnx, calib_dir, tmp_path / "t.onnx", target="tensorrt", num=6,
                       vnni_only=True, progress=False)


def test_a_graph_that_fails_the_proof_is_not_written(small_onnx, calib_dir, tmp_path):
    eight_bit = replace(RECIPES["cpu"], weight_range="int8")
    out = tmp_path / "unsafe.onnx"
    with pytest.raises(U2Error, match="can saturate.*nothing written"):
        quantize_model(small_onnx, calib_dir, out, target="cpu", num=6, recipe=eight_bit, progress=False)
    assert not out.exists() and not Path(f"{out}.json").exists()


def test_check_qdq_on_a_float_model_and_on_junk(random_small_onnx, tmp_path):
    result = CliRunner().invoke(app, ["check-qdq", "--rules", "cpu", str(random_small_onnx)])
    assert result.exit_code == 0 and "no quantized nodes to check" in result.output
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    result = CliRunner().invoke(app, ["check-qdq", str(empty)])
    assert isinstance(result.exception, U2Error) and "not an ONNX model" in str(result.exception)


# --- a real AVX2-only CPU: ONNX Runtime under QEMU's Haswell model (AVX2, FMA; no AVX-512, no VNNI) ---------

QEMU = shutil.which("qemu-x86_64")
_RUN_BOTH = """
import sys, numpy as np, onnxruntime as ort
from numpy._core._multiarray_umath import __cpu_features__ as cpu
print("AVX2" if cpu["AVX2"] and not cpu["AVX512F"] and not cpu.get("AVX512_VNNI") else "not AVX2-only")
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    np.save(path + ".avx2.npy", np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]))
"""


@pytest.mark.slow
@pytest.mark.isa
@pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64 (Debian: qemu-user) to emulate an AVX2-only x86 CPU")
def test_an_avx2_only_cpu_computes_what_this_one_does(cpu_model, small_onnx, calib_dir, tmp_path):
    """The 7-bit artifact computes the same maps on AVX2 (VPMADDUBSW) as here; 8-bit weights do not."""
    from u2deploy.data import preprocess
    from u2deploy.data.samples import generated_images
    from u2deploy.ort_session import cpu_session, run_first_output

    vnni = quantize_model(small_onnx, calib_dir, tmp_path / "vnni.onnx", target="cpu", num=6,
                          vnni_only=True, progress=False).path
    x = preprocess.fast(generated_images(2, seed=3, size=(64, 64)), (64, 64))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "run.py").write_text(_RUN_BOTH)
    done = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, str(tmp_path / "run.py"), str(tmp_path / "x.npy"),
                           str(cpu_model), str(vnni)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    if done.stdout.splitlines()[0] != "AVX2":  # QEMU before 7.2 emulates no AVX2: nothing would be shown
        pytest.skip(f"this qemu-x86_64 -cpu Haswell is {done.stdout.splitlines()[0]}")
    here = {path: run_first_output(cpu_session(path), x) for path in (cpu_model, vnni)}
    avx2 = {path: np.load(f"{path}.avx2.npy") for path in (cpu_model, vnni)}
    assert np.abs(avx2[cpu_model] - here[cpu_model]).max() <= 1e-6
    if hardware.int8_saturates() is False:  # here exact, there saturating: the emulation shows the difference
        assert np.abs(avx2[vnni] - here[vnni]).max() > 1e-3


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_weights_are_checked_on_their_output_axis(trans_b):
    """ONNX Runtime runs a Q/DQ Gemm on the same u8×s8 kernels (QGemm)."""
    w = np.zeros((4, 3), np.int8)  # K × N
    w[0, 1], w[2, 1] = 127, 127  # output column 1: two large same-sign weights
    weight = w.T.copy() if trans_b else w
    inits = [numpy_helper.from_array(weight, "w_q"), numpy_helper.from_array(np.float32(0.01), "ws"),
             numpy_helper.from_array(np.int8(0), "wz"), numpy_helper.from_array(np.float32(0.02), "xs"),
             numpy_helper.from_array(np.uint8(0), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "wz"], ["w"]),
             helper.make_node("Gemm", ["xd", "w"], ["y"], name="gemm", transB=trans_b)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    violations, bounds = saturation.check_saturation(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)]))
    assert [b.channels for b in bounds] == [3] and bounds[0].failing_channels == 1
    assert [v.node for v in violations] == ["gemm"]
