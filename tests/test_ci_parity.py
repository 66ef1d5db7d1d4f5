"""The CI parity check: the demo small model, exported to FP32, FP16 and both INT8 targets, against
PyTorch on held-out ECSSD (0801–1000), each within the declared tolerance of its precision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ECSSD, needs_ecssd
from u2deploy.model.registry import default_weights

pytestmark = [needs_ecssd, pytest.mark.slow,
              pytest.mark.skipif(default_weights("small") is None, reason="the package has no demo weights")]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from u2deploy.calibration.quantize import quantize
    from u2deploy.export.fp16 import convert_fp16
    from u2deploy.export.onnx import export_onnx

    work = tmp_path_factory.mktemp("ci_parity")
    calib = work / "calib"  # a few training-split images: never the held-out ones
    calib.mkdir()
    for i in range(1, 801, 25):
        (calib / f"{i:04d}.jpg").symlink_to(ECSSD / "images" / f"{i:04d}.jpg")
    fp32 = export_onnx("small", None, work / "u2netp.onnx", dynamic_batch=True).path
    return {
        "fp32": fp32,
        "fp16": convert_fp16(fp32, work / "u2netp_fp16.onnx"),
        "int8-cpu": quantize(fp32, calib, work / "u2netp_int8_cpu.onnx", target="cpu", progress=False),
        "int8-trt": quantize(fp32, calib, work / "u2netp_int8_trt.onnx", target="tensorrt", progress=False),
    }


def test_every_artifact_is_within_its_tolerance(artifacts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "parity.json"
    candidates = [arg for path in artifacts.values() for arg in ("--candidates", str(path))]
    result = subprocess.run([sys.executable, "-m", "u2deploy.cli.bench", "parity", "--variant", "small",
                             "--data", str(ECSSD), "--subset", "0801-1000", *candidates, "--json", str(out)],
                            capture_output=True, text=True, timeout=1800)
    print(result.stdout)
    doc = json.loads(out.read_text())
    assert doc["n"] == 200
    rows = {Path(r["artifact"]).name: r for r in doc["results"]}
    assert rows["u2netp.onnx"]["precision"] == "fp32" and rows["u2netp.onnx"]["max_abs_diff"] <= 1e-4
    assert rows["u2netp_fp16.onnx"]["precision"] == "fp16"
    assert rows["u2netp_int8_cpu.onnx"]["precision"] == rows["u2netp_int8_trt.onnx"]["precision"] == "int8"
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(r["pass"] for r in doc["results"])
    # The reference itself is pinned: a shared preprocessing bug cannot hide behind zero deltas.
    record = json.loads(default_weights("small").path.with_suffix(".json").read_text())
    assert rows["torch:small"]["maxF"] == pytest.approx(record["metrics"]["maxF"], abs=0.002)
    assert rows["torch:small"]["mae"] == pytest.approx(record["metrics"]["mae"], abs=0.002)
