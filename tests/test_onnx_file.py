"""An ONNX file's metadata read before its session is built, and ONNX Runtime's run errors as one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from u2deploy.engines import onnxruntime as ort_runner
from u2deploy.engines import open_runner
from u2deploy.errors import U2Error
from u2deploy.onnx_file import read_metadata


def _conv(path: Path, metadata: list[tuple[str, str]] = (), shape=(1, 3, 8, 8)) -> Path:
    """A 1×1 conv (3 channels → 1) and a Sigmoid: the artifact contract, at a static input size."""
    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.3, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], 1, *shape[2:]])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in metadata:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def _ort_metadata(path: Path) -> dict[str, str]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_the_metadata_are_what_onnx_runtime_reports(tmp_path: Path, random_small_onnx: Path) -> None:
    path = _conv(tmp_path / "m.onnx", [("mean", "0.485,0.456,0.406"), ("note", "µ²-Net ✓"), ("empty", ""),
                                       ("precision", "fp16"), ("precision", "int8")])  # a repeated key: the last
    assert read_metadata(path) == _ort_metadata(path) == {"mean": "0.485,0.456,0.406", "note": "µ²-Net ✓",
                                                          "empty": "", "precision": "int8"}
    assert read_metadata(random_small_onnx) == _ort_metadata(random_small_onnx)
    assert read_metadata(_conv(tmp_path / "none.onnx")) == {}


def test_damaged_files_are_refused_in_one_line(tmp_path: Path) -> None:
    path = _conv(tmp_path / "m.onnx", [("precision", "int8")])
    data = path.read_bytes()
    cases = {"empty.onnx": b"", "truncated.onnx": data[:len(data) // 2], "group.onnx": b"\x0b" + data}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(U2Error, match=r"not an ONNX model \((empty file|damaged protobuf: .+)\)") as exc:
            read_metadata(tmp_path / name)
        assert _one_line(exc).startswith(str(tmp_path / name))
    with pytest.raises(U2Error, match="no such file"):
        read_metadata(tmp_path / "absent.onnx")
    latin1 = tmp_path / "latin1.onnx"
    latin1.write_bytes(_conv(tmp_path / "mark.onnx", [("mean", "MARK")]).read_bytes().replace(b"MARK", b"\xb0ARK"))
    with pytest.raises(U2Error, match="not UTF-8 text"):
        read_metadata(latin1)


def test_a_tensorrt_target_int8_graph_is_loaded_once_with_qdq_in_float(tmp_path: Path, monkeypatch) -> None:
    """The metadata say how to load it before the session is built: no second session."""
    path = _conv(tmp_path / "trt.onnx", [("precision", "int8"), ("quant_target", "tensorrt")])
    loads: list[str] = []
    real = ort_runner.load_session
    monkeypatch.setattr(ort_runner, "load_session", lambda *a, **k: loads.append(str(a[0])) or real(*a, **k))
    with open_runner(str(path)) as runner:
        options = runner.session.get_session_options()
        assert options.get_session_config_entry("session.disable_quant_qdq") == "1"
        assert runner.describe() == "onnxruntime (TensorRT emulated)"
        assert runner.info.metadata == {"precision": "int8", "quant_target": "tensorrt"}
    assert loads == [str(path)]
    cpu = _conv(tmp_path / "cpu.onnx", [("precision", "int8"), ("quant_target", "cpu")])
    with open_runner(str(cpu)) as runner:
        assert runner.describe() == "onnxruntime" and runner.settings()["qdq_in_float"] is False


def test_onnx_runtime_run_errors_are_one_line_u2errors(tmp_path: Path) -> None:
    path = _conv(tmp_path / "static.onnx")
    with open_runner(str(path)) as runner:
        assert runner.infer(np.zeros((1, 3, 8, 8), np.float32))["y"].shape == (1, 1, 8, 8)
        with pytest.raises(U2Error) as exc:
            runner.infer(np.zeros((1, 3, 9, 8), np.float32))
    assert _one_line(exc).startswith(f"{path}: ONNX Runtime cannot run it on a 1×3×9×8 batch (INVALID_ARGUMENT: ")
    assert "Got: 9 Expected: 8" in str(exc.value)
