"""`u2bench predict` and `u2bench parity` from the CLI, on real images where they matter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ECSSD, needs_ecssd


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "u2deploy.cli.bench", *args], capture_output=True,
                          text=True, timeout=900)


def _images(folder: Path, n: int = 3) -> Path:
    from u2deploy.data.samples import generated_images

    folder.mkdir()
    for i, image in enumerate(generated_images(n, size=(90, 120))):
        Image.fromarray(image).save(folder / f"img{i}.png")
    return folder


def test_predict_writes_masks_and_cutouts_and_reports_bad_files(tmp_path: Path, small_onnx: Path) -> None:
    images = _images(tmp_path / "in")
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = _bench("predict", "--model", str(small_onnx), "--images", str(images), "-o", str(out),
                    "--cutout", "--batch", "2")
    assert result.returncode == 1
    assert "broken.jpg: not a readable image" in result.stderr and "Traceback" not in result.stderr
    assert "wrote 3 masks" in result.stdout and "1 image failed" in result.stdout
    for i in range(3):
        mask = np.asarray(Image.open(out / f"img{i}.png"))
        assert mask.shape == (90, 120) and mask.dtype == np.uint8 and mask.max() == 255
        assert np.asarray(Image.open(out / "cutouts" / f"img{i}.png")).shape == (90, 120, 4)


def test_predict_torch_and_onnx_agree(tmp_path: Path, small_onnx: Path, small_weights: Path) -> None:
    images = _images(tmp_path / "in", 2)
    for model, out, extra in (("torch:small", "t", ["--weights", str(small_weights), "--size", "64"]),
                              (str(small_onnx), "o", [])):
        result = _bench("predict", "--model", model, "--images", str(images), "-o", str(tmp_path / out), *extra)
        assert result.returncode == 0, result.stderr
    for i in range(2):
        a = np.asarray(Image.open(tmp_path / "t" / f"img{i}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "o" / f"img{i}.png")).astype(int)
        assert np.abs(a - b).max() <= 1


def test_reference_mode_runs(tmp_path: Path, small_weights: Path) -> None:
    images = _images(tmp_path / "in", 1)
    result = _bench("predict", "--model", "torch:small", "--weights", str(small_weights), "--images",
                    str(images), "-o", str(tmp_path / "out"), "--preprocess", "reference", "--size", "64")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "img0.png").is_file()


@needs_ecssd
def test_parity_passes_for_the_fp32_export_and_writes_json_and_plot(tmp_path: Path, small_onnx: Path,
                                                                   small_weights: Path) -> None:
    result = _bench("parity", "--variant", "small", "--weights", str(small_weights), "--data", str(ECSSD),
                    "--subset", "0801-1000", "--limit", "12", "--size", "64", "--candidates", str(small_onnx),
                    "--json", str(tmp_path / "p.json"), "--plot", str(tmp_path / "pr.png"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✅" in result.stdout and "❌" not in result.stdout
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["n"] == 12 and [r["backend"] for r in doc["results"]] == ["torch", "onnxruntime"]
    onnx_row = doc["results"][1]
    assert onnx_row["pass"] and onnx_row["max_abs_diff"] <= 1e-4 and onnx_row["precision"] == "fp32"
    for key in ("maxF", "mae", "wF", "Sm", "relaxFb", "delta_maxF", "delta_mae", "mean_abs_diff"):
        assert key in onnx_row
    assert (tmp_path / "pr.png").stat().st_size > 1000


@needs_ecssd
def test_parity_fails_when_a_delta_exceeds_its_bound(tmp_path: Path, small_onnx: Path,
                                                     small_weights: Path) -> None:
    result = _bench("parity", "--variant", "small", "--weights", str(small_weights), "--data", str(ECSSD),
                    "--subset", "0801-1000", "--limit", "4", "--size", "64", "--candidates", str(small_onnx),
                    "--max-delta-maxf", "-1", "--json", str(tmp_path / "p.json"))
    assert result.returncode == 1
    assert "❌" in result.stdout
    assert json.loads((tmp_path / "p.json").read_text())["results"][1]["pass"] is False


@needs_ecssd
def test_parity_catches_an_artifact_from_other_weights(tmp_path: Path, small_onnx: Path) -> None:
    from u2deploy.model import U2Net
    from u2deploy.model.synthetic import save_state_dict

    other = save_state_dict(U2Net("small"), tmp_path / "other.pth")
    result = _bench("parity", "--variant", "small", "--weights", str(other), "--data", str(ECSSD),
                    "--subset", "0801-1000", "--limit", "4", "--size", "64", "--candidates", str(small_onnx))
    assert result.returncode == 1 and "max|Δ|" in result.stdout


def test_parity_missing_data_is_one_line(tmp_path: Path) -> None:
    result = _bench("parity", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_parity_names_every_unreadable_pair_and_exits_1(tmp_path: Path, small_onnx: Path,
                                                        small_weights: Path) -> None:
    images, masks = _images(tmp_path / "images", 4), tmp_path / "masks"
    masks.mkdir()
    for i in range(4):
        Image.fromarray(np.full((90, 120), 255 * (i % 2), np.uint8)).save(masks / f"img{i}.png")
    (images / "img1.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "img2.png")  # other size than its image
    result = _bench("parity", "--variant", "small", "--weights", str(small_weights), "--data", str(images),
                    "--masks", str(masks), "--size", "64", "--candidates", str(small_onnx),
                    "--json", str(tmp_path / "p.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "img1.png: not a readable image" in result.stdout and "img2.png" in result.stdout
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["n"] == 2 and len(doc["skipped"]) == 2
    assert all(r["pass"] for r in doc["results"])
