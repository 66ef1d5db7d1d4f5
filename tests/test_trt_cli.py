"""`u2export trt` and the TensorRT runner on a machine without TensorRT or a GPU: one line, no traceback,
and nothing run before the check (the ONNX stage in particular)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import pytest
from typer.testing import CliRunner

from u2deploy.engines import trt_compat
from u2deploy.errors import U2Error

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make this process look like a machine without tensorrt, cuda-python or an NVIDIA driver."""
    for name in ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # `import x` then raises ImportError
    monkeypatch.setattr(trt_compat, "_driver_device_count", lambda: None)


@pytest.fixture
def stages(monkeypatch):
    """Stand-ins for the ONNX, FP16 and Q/DQ stages that record whether anything called them."""
    calls: list[str] = []
    for module, func in (("u2deploy.export.onnx", "export_onnx"), ("u2deploy.export.fp16", "convert_fp16_model"),
                         ("u2deploy.calibration.quantize", "quantize_model")):
        fake = types.ModuleType(module)
        setattr(fake, func, lambda *a, _f=func, **k: calls.append(_f))
        monkeypatch.setitem(sys.modules, module, fake)
    return calls


def _invoke(args):
    from u2deploy.cli.export import app

    return CliRunner().invoke(app, args)


def test_variant_fp16_stops_before_the_onnx_stage(no_tensorrt, stages, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(["trt", "--variant", "small", "--fp16"])
    assert isinstance(result.exception, U2Error)
    message = str(result.exception)
    assert "\n" not in message
    assert "no `tensorrt` module" in message and "no `cuda-python` module" in message
    assert "no CUDA device" in message
    assert "pip install -e '.[gpu]'" in message and "onnxruntime-gpu" in message
    assert stages == []
    assert list(tmp_path.iterdir()) == []


def test_names_only_what_is_missing(no_tensorrt, stages, monkeypatch):
    monkeypatch.setattr(trt_compat, "_driver_device_count", lambda: 1)  # a driver and a GPU, no packages
    result = _invoke(["trt", "--variant", "full", "--int8", "--calib", "."])
    message = str(result.exception)
    assert "no `tensorrt` module" in message and "CUDA device" not in message
    assert stages == []


def test_flag_errors_come_first(no_tensorrt, stages):
    for args, expected in ((["--variant", "small", "--fp16", "--int8"], "choose one precision"),
                           (["--variant", "small"], "choose one precision"),
                           (["--onnx", "m.onnx", "--variant", "small", "--fp16"], "either --onnx"),
                           (["--variant", "tiny", "--fp16"], "--variant tiny"),
                           (["--variant", "small", "--fp16", "--batch", "2", "--max-batch", "4"],
                            "--batch fixes")):
        result = _invoke(["trt", *args])
        assert isinstance(result.exception, U2Error), args
        assert expected in str(result.exception)
    assert stages == []


def test_a_missing_output_folder_is_one_line_and_never_created(no_tensorrt, stages, tmp_path):
    result = _invoke(["trt", "--variant", "small", "--fp16", "-o", str(tmp_path / "missing" / "u2netp.engine")])
    assert isinstance(result.exception, U2Error)
    assert "missing does not exist" in str(result.exception) and "\n" not in str(result.exception)
    assert stages == [] and list(tmp_path.iterdir()) == []
    result = _invoke(["trt", "--variant", "small", "--fp16", "--verify-images", str(tmp_path / "none")])
    assert "--verify-images" in str(result.exception) and stages == []


def test_runner_without_tensorrt_is_one_line(no_tensorrt, tmp_path):
    from u2deploy.engines import open_runner

    engine = tmp_path / "u2netp_fp16.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(U2Error) as exc:
        open_runner(str(engine))
    assert "\n" not in str(exc.value) and "no `tensorrt` module" in str(exc.value)
    with pytest.raises(U2Error, match="no such engine file"):
        open_runner(str(tmp_path / "missing.engine"))
    with pytest.raises(U2Error, match="cuda"):
        open_runner(str(engine), device="cpu")


@pytest.mark.skipif(HAS_TENSORRT, reason="this machine has TensorRT: the no-TensorRT path is not reachable")
def test_console_script_prints_one_line_and_no_traceback(tmp_path):
    code = ("import sys; from u2deploy.cli.export import main; "
            "sys.argv = ['u2export', 'trt', '--variant', 'small', '--fp16']; main()")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("u2export: error: TensorRT engines need TensorRT and a CUDA GPU")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # the ONNX stage would have written u2netp.onnx here


def test_runner_module_imports_neither_torch_nor_onnxruntime():
    code = ("import sys, u2deploy.engines.tensorrt, u2deploy.engines.trt_manifest; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
