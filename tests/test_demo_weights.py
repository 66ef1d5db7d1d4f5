"""The embedded demo weights: loadable like u2netp.pth, honestly described, and as accurate as recorded.

The absolute maxFβ and MAE on ECSSD 0801–1000 are pinned to the provenance record, so that a
preprocessing or post-processing change that hurts accuracy fails here even though it would move
PyTorch and every exported artifact together (and so never show up as a parity delta).
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ECSSD, REFERENCE, needs_ecssd, needs_reference
from u2deploy.model import load_model, load_state_dict
from u2deploy.model.registry import DEMO_NAME, WEIGHTS_DIR, default_weights
from u2deploy.model.weights import sha256_of

RECORD = WEIGHTS_DIR / f"{DEMO_NAME}.json"
pytestmark = pytest.mark.skipif(not RECORD.is_file(), reason="the package has no demo weights")


def _record() -> dict:
    return json.loads(RECORD.read_text())


def test_weights_match_their_record() -> None:
    record = _record()
    info = default_weights("small")
    assert info is not None and info.is_demo and info.path.stat().st_size < 5_000_000
    assert sha256_of(info.path) == record["sha256"] == info.sha256
    assert info.input_size == tuple(record["input_size"]) and min(info.input_size) >= 160
    for key in ("data", "iterations", "train_minutes", "machine", "metrics", "curve"):
        assert key in record
    assert "ECSSD" in info.description and "not the authors' checkpoint" in info.description


@needs_reference
def test_layout_is_the_official_u2netp_one() -> None:
    state = load_state_dict(default_weights("small").path)
    rows = [line.split("\t") for line in (REFERENCE / "u2netp_state_dict.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    assert [k for k, _, _ in rows] == list(state)
    assert all(str(state[k].dtype).removeprefix("torch.") == dtype for k, dtype, _ in rows)


def test_used_when_no_weights_are_given(caplog) -> None:
    caplog.set_level("INFO", logger="u2deploy")
    loaded = load_model("small")
    assert loaded.info.is_demo and loaded.sha256 == _record()["sha256"]


@needs_ecssd
def test_accuracy_on_held_out_ecssd_is_pinned() -> None:
    from u2deploy.bench.evaluate import evaluate_maps, read_map
    from u2deploy.data import postprocess, preprocess
    from u2deploy.data.datasets import open_dataset
    from u2deploy.data.images import read_image

    record = _record()
    net = load_model("small").net
    size = tuple(record["input_size"])
    maps, gts = [], []
    for pair in open_dataset(ECSSD, subset="0801-1000"):
        image = read_image(pair.image)
        with torch.inference_mode():
            d0 = net(torch.from_numpy(preprocess.fast([image], size)))[0].numpy()
        maps.append(postprocess.fast(d0, [image.shape[:2]])[0])
        gts.append(read_map(pair.mask))
    assert len(maps) == 200
    metrics = evaluate_maps(maps, gts)
    assert metrics["maxF"] == pytest.approx(record["metrics"]["maxF"], abs=0.002)
    assert metrics["mae"] == pytest.approx(record["metrics"]["mae"], abs=0.002)
    assert metrics["maxF"] >= 0.72 and metrics["mae"] <= 0.18  # the target
