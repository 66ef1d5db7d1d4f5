"""Scoring folders of maps: matching by stem, errors, the JSON schema, plots, and `u2bench eval`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from u2deploy.bench.evaluate import (
    Evaluation,
    evaluate_folder,
    evaluate_maps,
    format_table,
    read_map,
    report,
)
from u2deploy.bench.metrics import BETA2, SODAccumulator
from u2deploy.bench.plots import PRCurve, plot_pr_curves
from u2deploy.cli.bench import app
from u2deploy.errors import U2Error
from u2deploy.files import write_json

ECSSD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ECSSD"
needs_ecssd = pytest.mark.skipif(not (ECSSD / "masks").is_dir(), reason=f"ECSSD not found at {ECSSD}")
RESULT_KEYS = ["backend", "artifact", "precision", "maxF", "mae", "wF", "Sm", "relaxFb"]


def _mask(seed: int, shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, np.uint8)
    r, c = rng.integers(5, 15), rng.integers(5, 25)
    m[r:r + 15, c:c + 20] = 255
    return m


def _save(folder: Path, name: str, array: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)
    return folder / name


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    """Six masks under truth/ and, under pred/, exact copies (as RGB, as the authors save them)."""
    for i in range(6):
        m = _mask(i)
        _save(tmp_path / "truth", f"{i:02d}.png", m)
        _save(tmp_path / "pred", f"{i:02d}.png", np.repeat(m[:, :, None], 3, axis=2))
    return tmp_path / "pred", tmp_path / "truth"


def test_perfect_predictions_score_perfectly(synthetic):
    pred, gt = synthetic
    result = evaluate_folder(pred, gt)
    assert result.n == 6 and result.dataset == "truth" and result.artifact == str(pred)
    m = result.metrics
    assert m["maxF"] == pytest.approx(1) and m["mae"] == 0 and m["Sm"] == pytest.approx(1)
    assert m["wF"] == pytest.approx(1) and m["relaxFb"] == pytest.approx(1)


def test_unmatched_files_are_counted_and_reported(synthetic, caplog):
    pred, gt = synthetic
    (pred / "00.png").unlink()
    _save(pred, "extra.png", _mask(0))
    with caplog.at_level(logging.WARNING):
        result = evaluate_folder(pred, gt)
    assert result.n == 5
    assert [p.name for p in result.predictions_without_gt] == ["extra.png"]
    assert [p.name for p in result.gt_without_prediction] == ["00.png"]
    assert caplog.messages == [f"truth: 1 prediction without a mask, 1 mask without a prediction "
                               f"(first: {pred / 'extra.png'}, {gt / '00.png'})"]


def test_limit_subset_and_workers(synthetic):
    pred, gt = synthetic
    assert evaluate_folder(pred, gt, limit=2).n == 2
    assert evaluate_folder(pred, gt, subset="01-03").n == 3
    one = evaluate_folder(pred, gt, workers=1).metrics
    two = evaluate_folder(pred, gt, workers=2).metrics
    assert one == two


def test_bad_predictions_are_named_and_skipped_in_one_run(synthetic):
    pred, gt = synthetic
    whole = evaluate_folder(pred, gt)
    (pred / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _save(pred, "02.png", np.zeros((20, 30), np.uint8))
    result = evaluate_folder(pred, gt)
    reasons = dict(result.failed)
    assert set(reasons) == {pred / "02.png", pred / "03.png"} and result.n == whole.n - 2
    assert "02.png: prediction is 30×20 but its ground truth is 60×40" in reasons[pred / "02.png"]
    assert str(pred / "03.png") in reasons[pred / "03.png"]
    assert all("\n" not in why for why in reasons.values())
    for other in pred.iterdir():
        other.write_bytes(b"junk")
    with pytest.raises(U2Error, match="no prediction could be scored") as info:
        evaluate_folder(pred, gt)
    assert "\n" not in str(info.value)


def test_cli_reports_every_bad_prediction_and_exits_1(synthetic):
    from typer.testing import CliRunner

    from u2deploy.cli.bench import app

    pred, gt = synthetic
    (pred / "03.png").write_bytes(b"not a png")
    (pred / "04.png").write_bytes(b"")
    result = CliRunner().invoke(app, ["eval", "--pred", str(pred), "--gt", str(gt)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "03.png" in result.output and "04.png" in result.output and "could not be scored" in result.output


def test_nothing_matches(tmp_path, synthetic):
    _, gt = synthetic
    _save(tmp_path / "other", "zz.png", _mask(1))
    with pytest.raises(U2Error, match="no prediction has the file stem of a mask"):
        evaluate_folder(tmp_path / "other", gt)
    with pytest.raises(U2Error, match="no such folder"):
        evaluate_folder(tmp_path / "missing", gt)


def test_read_map_takes_first_channel_and_8_bits(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    assert read_map(_save(tmp_path, "a.png", rgb)).tolist() == np.full((4, 5), 200).tolist()
    sixteen = Image.fromarray(np.full((4, 5), 65535, np.uint16))
    sixteen.save(tmp_path / "b.png")
    assert read_map(tmp_path / "b.png").dtype == np.uint8 and read_map(tmp_path / "b.png").max() == 255


def test_evaluate_maps_is_the_accumulator():
    preds = [_mask(i + 1) for i in range(3)]
    gts = [_mask(i) for i in range(3)]
    acc = SODAccumulator()
    for p, g in zip(preds, gts, strict=True):
        acc.add(p, g)
    assert evaluate_maps(preds, gts) == acc.result()
    with pytest.raises(U2Error, match="^b: prediction"):
        evaluate_maps([preds[0], preds[1][:10]], gts[:2], names=["a", "b"])


def test_json_schema_and_atomic_write(tmp_path, synthetic):
    pred, gt = synthetic
    result = evaluate_folder(pred, gt)
    other = Evaluation(dataset="truth", artifact="model.onnx", metrics=result.metrics, backend="onnxruntime",
                       precision="fp16")
    (tmp_path / "new").mkdir()
    out = write_json(tmp_path / "new" / "eval.json", report([result, other]))
    doc = json.loads(out.read_text())
    assert list(doc) == ["dataset", "n", "results"] and doc["dataset"] == "truth" and doc["n"] == 6
    assert [list(r) for r in doc["results"]] == [RESULT_KEYS, RESULT_KEYS]
    assert doc["results"][0]["backend"] == "files" and doc["results"][0]["precision"] is None
    assert doc["results"][1]["precision"] == "fp16"
    write_json(out, {"replaced": True})
    assert json.loads(out.read_text()) == {"replaced": True}
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.json"]  # no temp file left
    assert "maxFβ" in format_table([result, other]).splitlines()[0]


def test_plot_several_labelled_curves(tmp_path, synthetic):
    pytest.importorskip("matplotlib")
    pred, gt = synthetic
    result = evaluate_folder(pred, gt)
    flat = PRCurve("chance", np.full(256, 0.3), np.linspace(1, 0, 256))
    assert flat.max_f == pytest.approx((1 + BETA2) * 0.3 * 1 / (BETA2 * 0.3 + 1))
    out = plot_pr_curves([result.curve(), result.curve("again"), flat], tmp_path / "pr.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.curve().label == "pred"
    with pytest.raises(U2Error, match="cannot write a plot"):
        plot_pr_curves([flat], tmp_path / "pr.notaformat")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["pr.png"]


# --- `u2bench eval` on real ECSSD pairs ---------------------------------------------------------

STEMS = [f"{i:04d}" for i in range(1, 9)]


def _ecssd_predictions(folder: Path, make) -> list[np.ndarray]:
    gts = []
    for stem in STEMS:
        gt = np.asarray(Image.open(ECSSD / "masks" / f"{stem}.png").convert("L"))
        _save(folder, f"{stem}.png", make(gt))
        gts.append(gt)
    return gts


@needs_ecssd
def test_cli_eval_blurred_ground_truth(tmp_path):
    def blurred(gt: np.ndarray) -> np.ndarray:
        return np.clip(ndimage.gaussian_filter(gt.astype(float), 2), 0, 255).round().astype(np.uint8)

    _ecssd_predictions(tmp_path / "pred", blurred)
    out = CliRunner().invoke(app, ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(ECSSD),
                                   "--subset", "0001-0008", "--json", str(tmp_path / "r.json"),
                                   "--plot", str(tmp_path / "pr.png")])
    assert out.exit_code == 0, out.output
    header, row = out.output.splitlines()[:2]
    assert header.split()[:4] == ["dataset", "artifact", "n", "maxFβ"]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["dataset"] == "ECSSD 0001–0008" and doc["n"] == 8
    r = doc["results"][0]
    assert r["maxF"] > 0.98 and r["mae"] < 0.03 and r["wF"] > 0.9 and r["Sm"] > 0.95 and r["relaxFb"] > 0.97
    assert (tmp_path / "pr.png").stat().st_size > 0


@needs_ecssd
def test_cli_eval_constant_map(tmp_path):
    """A constant 128 map: everything is foreground up to threshold 128, nothing above, so maxFβ is
    Fβ(mean object share, 1); MAE is the mean distance to 128/255; no predicted boundary at all."""
    gts = _ecssd_predictions(tmp_path / "pred", lambda gt: np.full_like(gt, 128))
    out = CliRunner().invoke(app, ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(ECSSD / "masks"),
                                   "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    r = json.loads((tmp_path / "r.json").read_text())["results"][0]
    share = np.mean([np.mean(g >= 128) for g in gts])
    assert r["maxF"] == pytest.approx((1 + BETA2) * share / (BETA2 * share + 1), abs=1e-6)
    mae = np.mean([np.mean(np.abs(128 / 255 - (g >= 128))) for g in gts])
    assert r["mae"] == pytest.approx(mae, abs=1e-6)
    assert r["relaxFb"] == 0.0


def test_cli_errors_are_one_line_and_exit_1(tmp_path):
    script = Path(sys.executable).with_name("u2bench")
    if not script.exists():
        pytest.skip("the u2bench console script is not installed")
    done = subprocess.run([str(script), "eval", "--pred", str(tmp_path / "none"), "--gt", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"u2bench: error: {tmp_path / 'none'}: no such folder"]
