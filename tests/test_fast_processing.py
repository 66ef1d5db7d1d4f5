"""The torch-free fast pre/post-processing is the anti-aliased bilinear resize PyTorch computes, to one
gray level (8-bit resize) or to float32 rounding (16-bit inputs, the map), and imports no PyTorch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from u2deploy.data import postprocess, preprocess

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _torch_pre(image: np.ndarray, size) -> np.ndarray:
    """The previous fast path, PyTorch float32 (kept as the yardstick of the 8-bit one)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)) / float(np.iinfo(image.dtype).max)
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    x = x / max(float(x.max()), 1e-30)
    x = x.numpy()
    if image.shape[2] == 1:
        return np.repeat((x - MEAN[0]) / STD[0], 3, axis=0)
    return (x - np.reshape(MEAN, (3, 1, 1))) / np.reshape(STD, (3, 1, 1))


def _torch_post(pred: np.ndarray, size) -> np.ndarray:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    n = torch.from_numpy(postprocess.min_max(pred.reshape(1, 1, *pred.shape[-2:])))
    up = F.interpolate(n, size=size, mode="bilinear", align_corners=False, antialias=True)
    return up[0, 0].mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _photo(rng, h: int, w: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    smooth = (np.sin(6 * yy + 3 * xx)[..., None] * 0.4 + 0.5) * top
    noise = rng.normal(0, 0.05 * top, (h, w, channels))
    return np.clip(smooth + noise, 0, top).astype(dtype)


@pytest.mark.parametrize("shape,size", [((300, 400), (320, 320)), ((97, 143), (320, 320)),
                                        ((640, 480), (160, 160)), ((320, 320), (320, 320))])
@pytest.mark.parametrize("channels", [3, 1])
def test_eight_bit_resize_is_within_one_gray_level_of_pytorch(rng, shape, size, channels) -> None:
    image = _photo(rng, *shape, channels)
    ours = preprocess.fast([image], size)[0]
    theirs = _torch_pre(image, size)
    # Pillow's two 8-bit passes round twice (≤ 1 level) and the maximum it divides by is rounded
    # too (≤ 0.5 level); in normalised units a level is 1/255 / peak / std.
    peak = float(preprocess.resize_uint8(image, size).max()) / 255
    level = 1 / 255 / peak / min(STD)
    assert ours.shape == (3, *size) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1.52 * level
    assert np.abs(ours - theirs).mean() <= 0.5 * level


def test_sixteen_bit_images_are_resized_in_float(rng) -> None:
    image = _photo(rng, 123, 211, 3, np.uint16)
    assert np.abs(preprocess.fast([image], (64, 64))[0] - _torch_pre(image, (64, 64))).max() < 1e-4


@pytest.mark.parametrize("size", [(300, 400), (97, 143), (320, 320), (1000, 700), (40, 30)])
def test_mask_resize_matches_pytorch_up_to_float_ties(rng, size) -> None:
    pred = rng.random((1, 1, 320, 320)).astype(np.float32)
    ours = postprocess.fast(pred, [size])[0]
    theirs = _torch_post(pred, size)
    assert ours.shape == size and ours.dtype == np.uint8 and ours.flags.writeable
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_binary_masks_and_backgrounds() -> None:
    mask = np.array([[0, 127, 128, 255]], np.uint8)
    assert postprocess.binary(mask, 0.5).tolist() == [[0, 0, 255, 255]]
    assert postprocess.binary(mask, 1.0).tolist() == [[0, 0, 0, 255]]
    image = np.full((1, 4, 3), 100, np.uint8)
    out = postprocess.on_background(image, mask, (255, 0, 0))
    assert out.shape == (1, 4, 3) and out[0, 0].tolist() == [255, 0, 0] and out[0, 3].tolist() == [100, 100, 100]


def test_pre_and_postprocessing_import_no_pytorch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from u2deploy.data import postprocess, preprocess\n"
            "x = preprocess.fast([np.zeros((20, 30, 3), np.uint8)], (16, 16))\n"
            "postprocess.fast(np.zeros((1, 1, 16, 16), np.float32), [(20, 30)])\n"
            "assert 'skimage' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
