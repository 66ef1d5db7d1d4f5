"""One-line refusals for bad inputs: checkpoints that are not plain state_dicts, and ONNX that is not U²-Net.

The ONNX contract (one float32 N×3×H×W input, an N×1×H×W first output) is checked from a ModelProto
and from what ONNX Runtime reports of a session, and at every place an artifact is opened.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from u2deploy.calibration.quantize import load_source, quantize_model
from u2deploy.engines import open_runner
from u2deploy.engines.contract import check_contract, io_specs
from u2deploy.errors import U2Error
from u2deploy.export.fp16 import convert_fp16_model
from u2deploy.model import load_model, load_state_dict
from u2deploy.model.registry import default_weights
from u2deploy.onnx_file import load_onnx

ADD_REFUSAL = "add.onnx: not a U²-Net artifact: first output is 1×3×320×320, expected N×1×H×W"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def _model(inputs, outputs, nodes, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime reads
    return model


def _vi(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def add_model() -> onnx.ModelProto:
    """Valid ONNX, not U²-Net: y = x + x, 1×3×320×320 in and out."""
    return _model([_vi("x", [1, 3, 320, 320])], [_vi("y", [1, 3, 320, 320])],
                  [helper.make_node("Add", ["x", "x"], ["y"])])


def conv_model(shape=("N", 3, "H", "W"), out_shape=("N", 1, "H", "W")) -> onnx.ModelProto:
    """A 1×1 conv, 3 channels → 1: the contract's shape, with symbolic dims by default."""
    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.3, np.float32), "w")
    return _model([_vi("x", list(shape))], [_vi("y", list(out_shape))],
                  [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])], [w])


@pytest.fixture()
def add_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "add.onnx"
    onnx.save(add_model(), str(path))
    return path


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# --- the contract itself -------------------------------------------------------------------------------------


def test_an_add_model_is_refused_from_a_modelproto_a_session_and_its_io(add_onnx: Path) -> None:
    model = add_model()
    session = _session(model)
    for io_ in (model, session, (session.get_inputs(), session.get_outputs())):
        with pytest.raises(U2Error) as exc:
            check_contract(io_, "add.onnx")
        assert _one_line(exc) == ADD_REFUSAL


def test_real_and_symbolic_u2net_graphs_pass(random_small_onnx: Path) -> None:
    real = onnx.load(str(random_small_onnx))
    inp, out = check_contract(real, "small64.onnx")
    assert (inp.dtype, inp.shape, out.shape) == ("float", (1, 3, 64, 64), (1, 1, 64, 64))
    assert check_contract(_session(real), "small64.onnx") == (inp, out)
    symbolic = conv_model()
    inp, out = check_contract(symbolic, "dyn.onnx")
    assert inp.shape == ("N", 3, "H", "W") and out.shape == ("N", 1, "H", "W")
    assert check_contract(_session(symbolic), "dyn.onnx")[0].shape == ("N", 3, "H", "W")
    # unknown channel dims pass: only a static one that is wrong breaks the contract
    assert check_contract(conv_model(("N", None, 64, 64), ("N", None, 64, 64)), "m.onnx")


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    model = conv_model()
    model.graph.input.append(_vi("w", [1, 3, 1, 1]))  # IR < 4 lists every weight as a graph input
    assert [s.name for s in io_specs(model)[0]] == ["x"]
    check_contract(model, "old.onnx")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m.graph.input.append(_vi("mask", [1, 1, 64, 64])),
     "has 2 inputs (x, mask), expected one N×3×H×W image batch"),
    (lambda m: m.graph.input[0].type.tensor_type.__setattr__("elem_type", TensorProto.INT64),
     "input x is int64, expected float32"),
    (lambda m: m.graph.input[0].type.tensor_type.__setattr__("elem_type", TensorProto.FLOAT16),
     "input x is float16, expected float32 (u2export fp16 keeps FP32 inputs and outputs)"),
    (lambda m: m.graph.input[0].CopyFrom(_vi("x", [3, 64, 64])), "input x is 3×64×64, expected N×3×H×W"),
    (lambda m: m.graph.input[0].CopyFrom(_vi("x", ["N", 1, 64, 64])), "input x is N×1×64×64, expected N×3×H×W"),
    (lambda m: m.graph.input[0].CopyFrom(_vi("x", None)), "input x is of undeclared shape, expected N×3×H×W"),
    (lambda m: m.graph.output[0].CopyFrom(_vi("y", None)), "first output is of undeclared shape, expected N×1×H×W"),
    (lambda m: m.graph.output[0].CopyFrom(_vi("y", ["N", 1, "H"])), "first output is N×1×H, expected N×1×H×W"),
    (lambda m: m.graph.output[0].CopyFrom(_vi("y", [1, 2, 64, 64], TensorProto.INT32)),
     "first output y is int32, expected a float N×1×H×W map"),
    (lambda m: m.graph.ClearField("output"), "has no output, expected an N×1×H×W map"),
    (lambda m: m.graph.ClearField("input"), "has no input, expected one N×3×H×W image batch"),
])
def test_each_broken_clause_is_named_in_one_line(change, expected: str) -> None:
    model = conv_model()
    change(model)
    with pytest.raises(U2Error) as exc:
        check_contract(model, "m.onnx")
    assert _one_line(exc) == f"m.onnx: not a U²-Net artifact: {expected}"


# --- where artifacts are opened ------------------------------------------------------------------------------


def test_every_entry_point_refuses_a_non_u2net_onnx(add_onnx: Path, calib_dir: Path, tmp_path: Path) -> None:
    expected = ADD_REFUSAL.replace("add.onnx", str(add_onnx))
    with pytest.raises(U2Error) as exc:
        open_runner(str(add_onnx))  # ONNX Runtime's session io, after the session is created
    assert _one_line(exc) == expected
    with pytest.raises(U2Error) as exc:
        load_source(add_onnx)
    assert _one_line(exc) == expected
    with pytest.raises(U2Error) as exc:
        quantize_model(add_onnx, calib_dir, tmp_path / "q.onnx", num=2, progress=False)
    assert _one_line(exc) == expected
    with pytest.raises(U2Error) as exc:
        convert_fp16_model(add_onnx, tmp_path / "h.onnx")
    assert _one_line(exc) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["add.onnx"]  # nothing written, not even a temp file


def test_the_runner_still_opens_a_u2net_export(random_small_onnx: Path) -> None:
    with open_runner(str(random_small_onnx)) as runner:
        out = runner.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert next(iter(out.values())).shape == (1, 1, 64, 64)


def test_load_onnx_refuses_empty_and_invalid_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(U2Error) as exc:
        load_onnx(empty)
    assert _one_line(exc) == f"{empty}: not an ONNX model (empty file)"
    broken = add_model()
    broken.graph.node[0].op_type = "Ad"  # parses, but onnx.checker knows no such op
    path = tmp_path / "broken.onnx"
    onnx.save(broken, str(path))
    with pytest.raises(U2Error, match=r"broken.onnx: not a valid ONNX model \(.*Ad") as exc:
        load_onnx(path)
    _one_line(exc)


def test_strings_that_are_not_utf8_are_refused_not_a_unicode_traceback(tmp_path: Path) -> None:
    """ONNX strings are proto2: protobuf hands back bytes, and ONNX Runtime raises UnicodeDecodeError later."""
    model = conv_model((1, 3, 8, 8), (1, 1, 8, 8))
    model.metadata_props.add(key="mean", value="0.485,MARK")
    path = tmp_path / "latin1.onnx"
    path.write_bytes(model.SerializeToString().replace(b"MARK", b"\xb0ARK"))  # one flipped bit, as the fuzz found
    with pytest.raises(U2Error) as exc:
        load_onnx(path)
    assert _one_line(exc) == f"{path}: not a valid ONNX model (model.metadata_props[0].value is not UTF-8 text)"
    with pytest.raises(U2Error) as exc:
        open_runner(str(path))
    assert _one_line(exc) == f"{path}: not a valid ONNX model (a name or metadata value is not UTF-8 text)"


# --- checkpoints ---------------------------------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _torch_bytes(obj: object, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _demo_bytes() -> bytes:
    demo = default_weights("small")
    if demo is None or demo.path is None:
        return _torch_bytes({"a": torch.zeros(3)})
    return demo.path.read_bytes()


WEIGHT_CASES = {
    # the two texts that made torch.load raise KeyError: 101 and IndexError: pop from empty list
    "text": (b"hello world this is text\n", "not a PyTorch checkpoint (a text file starting 'hello world"),
    "eee": (b"e" * 100, "not a PyTorch checkpoint (a text file starting 'eeee"),
    "empty": (b"", "not a PyTorch checkpoint (empty file)"),
    "html": (b"<!DOCTYPE html><html><body>Quota exceeded",
             "not a PyTorch checkpoint (an HTML page: a failed download?)"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n",
            "not a PyTorch checkpoint (a Git LFS pointer, not the weights: run git lfs pull)"),
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00", "not a PyTorch checkpoint (a PNG image)"),
    "binary": (bytes(range(200, 256)), "not a PyTorch checkpoint (starts with bytes c8 c9 ca cb; expected a zip"),
    "code": (pickle.dumps({"stage1.x": Payload()}, protocol=2),
             "not a plain state_dict but a pickle with code objects (GLOBAL print), "
             "refused: only plain state_dicts load"),
    "module": (_torch_bytes(torch.nn.Linear(2, 2)),
               "not a plain state_dict but a pickle with code objects (GLOBAL torch.nn.modules.linear.Linear), "
               "refused: only plain state_dicts load"),
    "module-legacy": (_torch_bytes(torch.nn.Linear(2, 2), legacy=True),
                      "not a plain state_dict but a pickle with code objects (GLOBAL torch.nn"),
    "protocol4": (pickle.dumps({"stage1.x": Payload()}, protocol=4),
                  "not a plain state_dict but a pickle the safe loader cannot read (pickle protocol 4"),
    "bad-zip": (b"PK\x03\x04garbage", "truncated or corrupt checkpoint (not a ZIP archive)"),
    "cut-zip": (_demo_bytes()[:100_000], "truncated or corrupt checkpoint (failed finding central directory)"),
    "bad-pickle": (b"\x80\x02" + b"e" * 50, "truncated or corrupt checkpoint (damaged pickle: IndexError)"),
    "cut-pickle": (_torch_bytes({"a": torch.zeros(3)}, legacy=True)[:-10],
                   "truncated or corrupt checkpoint (damaged pickle: RuntimeError)"),
}


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_checkpoint_failures_say_what_the_file_is(tmp_path: Path, case: str, capsys, recwarn) -> None:
    content, expected = WEIGHT_CASES[case]
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(U2Error) as exc:
        load_state_dict(path)
    msg = _one_line(exc)
    assert msg.startswith(f"{path}: {expected}"), msg
    assert "weights_only" not in msg and "will likely succeed" not in msg
    assert "this must never run" not in capsys.readouterr().out
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # torch's multi-line warning


def test_weights_only_stays_on(tmp_path: Path, monkeypatch) -> None:
    seen: list[object] = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "ok.pth"
    path.write_bytes(_torch_bytes({"a": torch.zeros(3)}))
    assert set(load_state_dict(path)) == {"a"}
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(_torch_bytes({"a": torch.zeros(3)}, legacy=True))
    assert set(load_state_dict(legacy)) == {"a"}
    assert seen == [True, True]


def test_the_demo_weights_still_load() -> None:
    demo = default_weights("small")
    if demo is None or demo.path is None:
        pytest.skip("no embedded demo weights")
    assert load_model(None, demo.path).net.variant == "small"
