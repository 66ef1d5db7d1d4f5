"""The ONNX stage: checked, simplified, verified against PyTorch, atomic, with metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from u2deploy.errors import U2Error
from u2deploy.export.onnx import export_onnx
from u2deploy.model import DeployModel, load_model


def _torch_d0(weights: Path, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return DeployModel(load_model("small", weights).net)(torch.from_numpy(x)).numpy()


def test_export_writes_metadata_and_manifest(small_onnx: Path, small_weights: Path) -> None:
    model = onnx.load(str(small_onnx))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["variant"] == "small" and meta["input_size"] == "64x64" and meta["precision"] == "fp32"
    assert meta["opset"] == "17" and meta["batch"] == "dynamic" and len(meta["weights_sha256"]) == 64
    assert meta["mean"] == "0.485,0.456,0.406" and meta["torch_version"] == torch.__version__
    assert not any(k.startswith("onnxsim") for k in meta)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["saliency"]
    manifest = json.loads(Path(f"{small_onnx}.json").read_text())
    assert manifest["weights_sha256"] == meta["weights_sha256"]
    assert manifest["nodes"]["final"] < manifest["nodes"]["exported"]
    verification = manifest["verification"]
    assert verification["passed"] is True and verification["bound"] == {"precision": "fp32", "max_abs": 1e-4,
                                                                        "mean_abs": 0.001}
    assert verification["max_abs"] <= 1e-4 and verification["images"]["count"] == 4
    assert set(verification["checks"]) >= {"4 images at 64×64", "batch 1", "batch 4"}
    assert all(check["passed"] for check in verification["checks"].values())
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_dynamic_batch_matches_pytorch(small_onnx: Path, small_weights: Path, rng, batch: int) -> None:
    x = rng.normal(size=(batch, 3, 64, 64)).astype(np.float32)
    got = ort.InferenceSession(str(small_onnx)).run(None, {"input": x})[0]
    assert got.shape == (batch, 1, 64, 64)
    assert np.abs(got - _torch_d0(small_weights, x)).max() <= 1e-4


def test_dynamic_hw_matches_pytorch_at_odd_sizes(tmp_path: Path, small_weights: Path, rng) -> None:
    result = export_onnx("small", small_weights, tmp_path / "hw.onnx", size=(64, 64), dynamic_hw=True,
                         n_verify=2)
    assert any("×" in what for what, _ in result.vs_torch[1:])  # the stage itself checked other sizes
    session = ort.InferenceSession(str(result.path))
    for h, w in ((64, 64), (97, 45), (131, 200)):
        x = rng.normal(size=(1, 3, h, w)).astype(np.float32)
        got = session.run(None, {"input": x})[0]
        assert got.shape == (1, 1, h, w)
        assert np.abs(got - _torch_d0(small_weights, x)).max() <= 1e-4


def test_static_export_and_all_outputs(tmp_path: Path, small_weights: Path, rng) -> None:
    result = export_onnx("small", small_weights, tmp_path / "all.onnx", size=(48, 80), batch=2,
                         outputs="all", simplify=False, opset=13, n_verify=3)
    session = ort.InferenceSession(str(result.path))
    assert [o.name for o in session.get_outputs()] == ["d0", "d1", "d2", "d3", "d4", "d5", "d6"]
    assert session.get_inputs()[0].shape == [2, 3, 48, 80]
    assert result.vs_torch[0][1].outputs == ("d0", "d1", "d2", "d3", "d4", "d5", "d6")  # verified, every one
    x = rng.normal(size=(2, 3, 48, 80)).astype(np.float32)
    with torch.inference_mode():
        expected = load_model("small", small_weights).net(torch.from_numpy(x))
    for got, want in zip(session.run(None, {"input": x}), expected):
        assert np.abs(got - want.numpy()).max() <= 1e-4


@pytest.mark.parametrize("opset", [9, 10, 25])
def test_unsupported_opsets_are_refused(tmp_path: Path, small_weights: Path, opset: int) -> None:
    with pytest.raises(U2Error, match=f"--opset {opset}"):
        export_onnx("small", small_weights, tmp_path / "x.onnx", opset=opset)
    assert not list(tmp_path.iterdir())


def test_failed_verification_leaves_nothing(tmp_path: Path, small_weights: Path, monkeypatch) -> None:
    from u2deploy.validate import verify
    from u2deploy.validate.tolerances import Tolerance

    monkeypatch.setattr(verify, "tolerance_for", lambda p: Tolerance("fp32", -1.0, 0, 0))
    with pytest.raises(U2Error, match=r"breaks its bound, nothing written: .*\(max\|Δ\| ≤ -1, "):
        export_onnx("small", small_weights, tmp_path / "bad.onnx", size=(64, 64), n_verify=2)
    assert not list(tmp_path.iterdir())


def test_unwritable_output_fails_before_work(tmp_path: Path, small_weights: Path) -> None:
    with pytest.raises(U2Error, match="does not exist"):
        export_onnx("small", small_weights, tmp_path / "missing" / "x.onnx")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(U2Error, match="cannot write"):
            export_onnx("small", small_weights, locked / "x.onnx")


def test_cli_status_line(tmp_path: Path, small_weights: Path) -> None:
    out = tmp_path / "cli.onnx"
    result = subprocess.run([sys.executable, "-m", "u2deploy.cli.export", "onnx", "--variant", "small",
                             "--weights", str(small_weights), "--size", "64", "-o", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"exported {out} (") and "max|Δ|" in line
    assert f"next: u2bench latency --model {out}" in line


def test_cli_one_line_errors(tmp_path: Path) -> None:
    for args in (["--opset", "9"], ["--variant", "full"], ["--weights", str(tmp_path / "none.pth")]):
        result = subprocess.run([sys.executable, "-m", "u2deploy.cli.export", "onnx", *args,
                                 "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_full_variant_exports_and_verifies(tmp_path: Path) -> None:
    """Random full weights with BatchNorm re-estimated on images: realistic, unsaturated maps."""
    from u2deploy.data import preprocess
    from u2deploy.data.samples import verification_images
    from u2deploy.model.synthetic import random_calibrated, save_state_dict

    images, _ = verification_images(4)
    weights = save_state_dict(random_calibrated("full", [preprocess.fast(images, (64, 64))]),
                              tmp_path / "full.pth")
    result = export_onnx("full", weights, tmp_path / "u2net.onnx", size=(64, 64), n_verify=4)
    print(f"full export: {result.seconds:.1f} s")
    assert result.worst.max_abs <= 1e-4
    d0 = ort.InferenceSession(str(result.path)).run(
        None, {"input": preprocess.fast(images[:1], (64, 64))})[0]
    assert 0.001 < d0.std() and 0.0 < d0.min() < d0.max() < 1.0  # not saturated, not constant
