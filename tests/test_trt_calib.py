"""Calibration data for the implicit INT8 calibrator: reproducible sampling, project preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from u2deploy.data.images import read_image
from u2deploy.data.preprocess import fast
from u2deploy.errors import U2Error
from u2deploy.export.trt_calib import calibration_batches, sample_images


@pytest.fixture
def calib_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        h, w = 24 + 4 * i, 40 - 2 * i  # mixed sizes, as real calibration sets are
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"img{i:02d}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(tmp_path / "gray.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_all_images_in_name_order_by_default(calib_dir):
    files = sample_images(calib_dir)
    assert [f.name for f in files] == ["gray.png"] + [f"img{i:02d}.png" for i in range(10)]


def test_sampling_is_seeded_and_reproducible(calib_dir):
    a = sample_images(calib_dir, 5, seed=0)
    assert a == sample_images(calib_dir, 5, seed=0)
    assert len(a) == 5 and a == sorted(a)
    assert len(set(a)) == 5
    others = {tuple(sample_images(calib_dir, 5, seed=s)) for s in range(1, 6)}
    assert any(o != tuple(a) for o in others)
    assert sample_images(calib_dir, 50) == sample_images(calib_dir)  # more than there are: all of them
    with pytest.raises(U2Error, match="--calib-images"):
        sample_images(calib_dir, 0)


def test_batches_are_the_project_preprocessing(calib_dir):
    files = sample_images(calib_dir)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batches = list(calibration_batches(files, (4, 3, 32, 32), mean, std))
    assert len(batches) == 2  # 11 images: two full batches of 4, the last 3 left out
    for b in batches:
        assert b.shape == (4, 3, 32, 32) and b.dtype == np.float32
    expected = fast([read_image(p) for p in files[4:8]], (32, 32), mean, std)
    np.testing.assert_array_equal(batches[1], expected)


def test_too_few_images_for_one_batch(calib_dir):
    with pytest.raises(U2Error, match="fewer than one batch of 16"):
        next(calibration_batches(sample_images(calib_dir), (16, 3, 32, 32)))


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(U2Error, match="no such file or folder"):
        sample_images(tmp_path / "nope")
    with pytest.raises(U2Error, match="no images found"):
        sample_images(tmp_path)


def test_mean_std_from_onnx_metadata():
    from u2deploy.artifact import IMAGENET_MEAN, ArtifactSpec

    assert ArtifactSpec.from_metadata({"mean": "0.1,0.2,0.3"}).mean == (0.1, 0.2, 0.3)
    assert ArtifactSpec.from_metadata({}).mean == IMAGENET_MEAN
    with pytest.raises(U2Error, match="three comma-separated numbers"):
        ArtifactSpec.from_metadata({"mean": "0.1,0.2"})
    with pytest.raises(U2Error, match="three comma-separated numbers"):
        ArtifactSpec.from_metadata({"std": "a,b,c"})
