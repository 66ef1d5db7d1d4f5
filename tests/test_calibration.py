"""The calibration set (seeded sampling, skipped images, one-line errors) and the range cache's keying."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2deploy.calibration.cache import CacheKey, load_ranges, save_ranges
from u2deploy.calibration.dataset import DEFAULT_NUM, InputSpec, calibration_set, list_digest, sample_images
from u2deploy.errors import U2Error
from u2deploy.files import sha256_of as file_sha256

SPEC = InputSpec((32, 48), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "input")


def _folder(tmp_path: Path, n: int, name: str = "imgs") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def test_sampling_is_deterministic_sorted_and_seeded(tmp_path):
    folder = _folder(tmp_path, 40)
    first = sample_images(folder, 10, seed=0)
    assert first == sample_images(folder, 10, seed=0)
    assert first == sorted(first) and len(set(first)) == 10
    assert first != sample_images(folder, 10, seed=1)
    assert sample_images(folder, 100, seed=3) == sorted(folder.iterdir())  # fewer than asked: all of them
    assert sample_images(folder, None) == sorted(folder.iterdir())


def test_sampling_does_not_depend_on_where_the_folder_is(tmp_path):
    a, b = _folder(tmp_path, 25, "a"), _folder(tmp_path, 25, "b")
    assert [p.name for p in sample_images(a, 7, 5)] == [p.name for p in sample_images(b, 7, 5)]
    assert list_digest(sample_images(a, 7, 5)) == list_digest(sample_images(b, 7, 5))


def test_missing_or_empty_folder_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    for folder, words in ((tmp_path / "nope", "no such folder"), (tmp_path / "empty", "no image files")):
        with pytest.raises(U2Error, match=words) as exc:
            sample_images(folder, 10)
        assert "\n" not in str(exc.value)


def test_small_sets_warn(tmp_path, caplog):
    folder = _folder(tmp_path, 5)
    with caplog.at_level(logging.WARNING):
        calib = calibration_set(folder, SPEC, DEFAULT_NUM)
    assert len(calib.files) == 5
    assert f"{DEFAULT_NUM} or more" in caplog.text and "only 5" in caplog.text


def test_batches_use_the_model_input_and_skip_unreadable_images(tmp_path, caplog):
    folder = _folder(tmp_path, 6)
    (folder / "0002.png").write_bytes(b"not a png")
    calib = calibration_set(folder, SPEC, 10)
    with caplog.at_level(logging.WARNING):
        batches = list(calib.batches(batch_size=2))
    assert [b.shape for b in batches] == [(2, 3, 32, 48), (2, 3, 32, 48), (1, 3, 32, 48)]
    assert batches[0].dtype == np.float32
    assert [p.name for p, _ in calib.skipped] == ["0002.png"]
    assert "skipped 1 unreadable image" in caplog.text
    assert calib.describe()["skipped"] == 1


def test_all_images_unreadable_is_an_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"junk")
    with pytest.raises(U2Error, match="none of the 3"):
        list(calibration_set(folder, SPEC, 3).batches())


def _key(**changes) -> CacheKey:
    fields = dict(model_sha256="a" * 64, preprocessing=SPEC.as_dict(), images="b" * 64, n_images=3,
                  method="minmax", options={"symmetric": False})
    return CacheKey(**{**fields, **changes})


def test_cache_round_trip_and_absent_file(tmp_path):
    path = tmp_path / "m.calib.json"
    assert load_ranges(path, _key()) is None
    save_ranges(path, _key(), {"x": (-1.5, 2.0), "y": (0.0, 3.25)})
    assert load_ranges(path, _key()) == {"x": (-1.5, 2.0), "y": (0.0, 3.25)}
    assert json.loads(path.read_text())["key"]["method"] == "minmax"


@pytest.mark.parametrize("change, words", [
    ({"model_sha256": "c" * 64}, "another model"),
    ({"preprocessing": {**SPEC.as_dict(), "size": [64, 64]}}, "other preprocessing"),
    ({"images": "d" * 64}, "other images"),
    ({"method": "entropy"}, "another method"),
])
def test_cache_for_another_calibration_is_refused(tmp_path, change, words):
    path = tmp_path / "m.calib.json"
    save_ranges(path, _key(), {"x": (0.0, 1.0)})
    with pytest.raises(U2Error, match=words) as exc:
        load_ranges(path, _key(**change))
    assert "--recalibrate" in str(exc.value) and "\n" not in str(exc.value)


def test_a_file_that_is_not_a_cache_is_refused(tmp_path):
    path = tmp_path / "m.calib.json"
    path.write_text("{\"something\": 1}")
    with pytest.raises(U2Error, match="not a u2deploy calibration cache"):
        load_ranges(path, _key())


@pytest.mark.parametrize("damage, words", [
    (lambda d: d["ranges"].update(x=[v / 30 for v in d["ranges"]["x"]]), "do not match their recorded sha256"),
    (lambda d: d["ranges"].update(x=[2.0, 1.0]), "the range of x is"),
    (lambda d: d["ranges"].update(x=[0.0, float("inf")]), "the range of x is"),
    (lambda d: d.pop("ranges_sha256"), "do not match their recorded sha256"),
    (lambda d: d.update(format="u2deploy-calibration-cache/1"), "older u2deploy, without a digest"),
])
def test_a_damaged_cache_is_refused_before_use_and_kept(tmp_path, damage, words):
    path = tmp_path / "m.calib.json"
    save_ranges(path, _key(), {"x": (-1.5, 2.0), "y": (0.0, 3.25)})
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(U2Error, match=words) as exc:
        load_ranges(path, _key())
    message = str(exc.value)
    assert message.startswith(f"calibration cache {path}") and "\n" not in message
    assert "delete it" in message and "--cache with another file" in message
    assert path.read_bytes() == before  # never deleted or rewritten by the refusal


def test_model_hash_is_of_the_file_bytes(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert file_sha256(a) == file_sha256(b) != file_sha256(tmp_path / "a.onnx") + "x"
