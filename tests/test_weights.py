"""Loading checkpoints users bring: safe, strict, and one-line errors for every bad case."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from u2deploy.errors import U2Error
from u2deploy.model import U2Net, detect_variant, load_model, load_state_dict


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return U2Net("small").state_dict()


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_plain_state_dict_loads(tmp_path: Path, small_state) -> None:
    loaded = load_model("small", _save(small_state, tmp_path / "u2netp.pth"))
    assert loaded.info.variant == "small" and len(loaded.sha256) == 64
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, small_state[key])
    assert not loaded.net.training


def test_variant_is_detected_from_shapes(tmp_path: Path, small_state) -> None:
    assert load_model(None, _save(small_state, tmp_path / "w.pth")).net.variant == "small"
    assert detect_variant(U2Net("full").state_dict()) == "full"


def test_dataparallel_prefix_and_missing_batch_counters(tmp_path: Path, small_state) -> None:
    wrapped = {f"module.{k}": v for k, v in small_state.items() if not k.endswith("num_batches_tracked")}
    loaded = load_model("small", _save(wrapped, tmp_path / "dp.pth"))
    assert torch.equal(loaded.net.state_dict()["outconv.weight"], small_state["outconv.weight"])


def test_wrong_variant_is_refused_in_one_line(tmp_path: Path, small_state) -> None:
    with pytest.raises(U2Error, match=r"weights are the small model \(u2netp\); --variant full was given"):
        load_model("full", _save(small_state, tmp_path / "u2netp.pth"))


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path, small_state) -> None:
    broken = dict(small_state)
    del broken["side1.weight"]
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(U2Error, match="missing keys: side1.weight.*unexpected keys: extra.weight"):
        load_model("small", _save(broken, tmp_path / "broken.pth"))


def test_wrong_shape_is_refused(tmp_path: Path, small_state) -> None:
    broken = dict(small_state)
    broken["outconv.weight"] = torch.zeros(1, 7, 1, 1)
    with pytest.raises(U2Error, match="wrong tensor shapes: outconv.weight"):
        load_model("small", _save(broken, tmp_path / "broken.pth"))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused_not_run(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"stage1.x": Payload()}, f)
    with pytest.raises(U2Error, match="not a plain state_dict"):
        load_state_dict(path)
    assert "this must never run" not in capsys.readouterr().out


def test_whole_module_pickle_is_refused(tmp_path: Path) -> None:
    path = _save(U2Net("small"), tmp_path / "module.pth")
    with pytest.raises(U2Error, match="not a plain state_dict"):
        load_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_files_are_one_line_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(U2Error, match=r"bad.pth: (truncated or corrupt|not a plain|not a PyTorch checkpoint)"):
        load_state_dict(path)


def test_truncated_checkpoint(tmp_path: Path, small_state) -> None:
    whole = _save(small_state, tmp_path / "whole.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(U2Error, match="truncated.pth: truncated or corrupt checkpoint"):
        load_state_dict(path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    with pytest.raises(U2Error, match="not a state_dict"):
        load_state_dict(_save([torch.zeros(1)], tmp_path / "list.pth"))
    with pytest.raises(U2Error, match="not a U²-Net checkpoint"):
        load_model(None, _save({"a": torch.zeros(1)}, tmp_path / "other.pth"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(U2Error, match="no such weights file"):
        load_state_dict(tmp_path / "nope.pth")


def test_full_variant_without_weights_names_the_flag() -> None:
    with pytest.raises(U2Error, match="--weights"):
        load_model("full", None)


@pytest.mark.parametrize("content", [b"garbage", None])
def test_cli_reports_bad_weights_in_one_line(tmp_path: Path, small_state, content) -> None:
    path = tmp_path / "w.pth"
    if content is None:
        _save(small_state, path)
        args = ["--variant", "full"]
    else:
        path.write_bytes(content)
        args = []
    result = subprocess.run([sys.executable, "-m", "u2deploy.cli.export", "onnx", "--weights", str(path),
                             "-o", str(tmp_path / "out.onnx"), *args], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert not (tmp_path / "out.onnx").exists()
