"""Reference pre/post-processing is the authors' script; fast mode stays close to it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import ECSSD, needs_ecssd
from u2deploy.data import postprocess, preprocess
from u2deploy.data.images import read_image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def authors_preprocess(image: np.ndarray, size: int = 320) -> np.ndarray:
    """The authors' RescaleT + ToTensorLab(flag=0), transcribed line by line (u2net_test.py)."""
    from skimage import transform

    img = transform.resize(image, (size, size), mode="constant")
    tmp = np.zeros((img.shape[0], img.shape[1], 3))
    img = img / np.max(img)
    if img.shape[2] == 1:
        for c in range(3):
            tmp[:, :, c] = (img[:, :, 0] - 0.485) / 0.229
    else:
        for c in range(3):
            tmp[:, :, c] = (img[:, :, c] - MEAN[c]) / STD[c]
    return tmp.transpose((2, 0, 1)).astype(np.float32)


def authors_postprocess(pred: np.ndarray, h: int, w: int) -> np.ndarray:
    ma, mi = pred.max(), pred.min()
    pred = (pred - mi) / (ma - mi)
    im = Image.fromarray(pred * 255).convert("RGB")
    return np.array(im.resize((w, h), resample=Image.BILINEAR))[:, :, 0]


@pytest.mark.parametrize("channels", [3, 1])
def test_reference_preprocessing_is_the_authors(rng, channels: int) -> None:
    image = rng.integers(0, 230, (123, 211, channels), dtype=np.uint8)
    ours = preprocess.reference(image, (320, 320))
    assert np.allclose(ours, authors_preprocess(image), atol=1e-6)


def test_reference_postprocessing_is_the_authors(rng) -> None:
    pred = rng.random((320, 320)).astype(np.float32)
    assert np.array_equal(postprocess.reference(pred, (97, 143)), authors_postprocess(pred, 97, 143))


def test_fast_is_batched_and_close_to_reference() -> None:
    from u2deploy.data.samples import generated_images

    images = generated_images(1, size=(300, 400)) + generated_images(1, seed=1, size=(401, 257))
    fast = preprocess.fast(images, (160, 160))
    assert fast.shape == (2, 3, 160, 160) and fast.dtype == np.float32
    ref = np.stack([preprocess.reference(im, (160, 160)) for im in images])
    assert np.abs(fast - ref).mean() < 0.1


def test_grayscale_uses_the_first_channel_statistics() -> None:
    gray = np.full((10, 10, 1), 255, np.uint8)
    x = preprocess.fast([gray], (8, 8))
    assert np.allclose(x, (1 - 0.485) / 0.229)


def test_constant_map_postprocesses_to_zeros() -> None:
    flat = np.full((1, 1, 16, 16), 0.3, np.float32)
    assert not postprocess.fast(flat, [(20, 30)])[0].any()
    assert not postprocess.reference(flat[0, 0], (20, 30)).any()


def test_fast_postprocessing_matches_reference_closely(rng) -> None:
    preds = rng.random((2, 1, 64, 64)).astype(np.float32)
    sizes = [(100, 120), (50, 40)]
    for fast, pred, size in zip(postprocess.fast(preds, sizes), preds, sizes):
        ref = postprocess.reference(pred[0], size)
        assert fast.shape == ref.shape == size
        assert np.abs(fast.astype(int) - ref.astype(int)).max() <= 2


def test_cutout_is_rgba_with_the_mask_as_alpha(rng) -> None:
    image = rng.integers(0, 256, (5, 6, 1), dtype=np.uint8)
    mask = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    out = postprocess.cutout(image, mask)
    assert out.shape == (5, 6, 4) and np.array_equal(out[:, :, 3], mask)


@needs_ecssd
def test_fast_and_reference_agree_on_real_images() -> None:
    images = [read_image(ECSSD / "images" / f"{i:04d}.jpg") for i in (801, 900, 1000)]
    fast = preprocess.fast(images, (320, 320))
    ref = np.stack([preprocess.reference(im, (320, 320)) for im in images])
    assert np.abs(fast - ref).mean() < 0.05
