"""Decoding what users throw at the pipeline; bad files fail in one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2deploy.data import images as images_module
from u2deploy.data import preprocess
from u2deploy.data.images import list_images, read_image
from u2deploy.errors import U2Error


def _rgb(rng, h=40, w=60) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_jpeg_and_png(tmp_path: Path, rng) -> None:
    arr = _rgb(rng)
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    assert np.array_equal(read_image(tmp_path / "a.png"), arr)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.shape == (40, 60, 3) and jpg.dtype == np.uint8


def test_grayscale_stays_one_channel(tmp_path: Path, rng) -> None:
    Image.fromarray(_rgb(rng)[:, :, 0]).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (40, 60, 1)


def test_rgba_keeps_the_first_three_channels(tmp_path: Path, rng) -> None:
    rgba = np.dstack([_rgb(rng), np.full((40, 60), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])


def test_palette_image(tmp_path: Path, rng) -> None:
    Image.fromarray(_rgb(rng)).convert("P").save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8


def test_sixteen_bit_png(tmp_path: Path) -> None:
    arr = (np.arange(40 * 60, dtype=np.uint16) * 27).reshape(40, 60)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint16 and out.shape == (40, 60, 1)
    assert np.array_equal(out[:, :, 0], arr)
    x = preprocess.fast([out], (32, 32))
    assert np.isfinite(x).all()


def test_exif_rotation_is_applied(tmp_path: Path, rng) -> None:
    im = Image.fromarray(_rgb(rng, 40, 60))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (60, 40, 3)


def test_all_black_image_gives_no_nan() -> None:
    black = np.zeros((50, 70, 3), np.uint8)
    for mode in preprocess.MODES:
        x = preprocess.preprocess([black], (32, 32), mode)
        assert np.isfinite(x).all()
        assert np.allclose(x[0, 0], -0.485 / 0.229, atol=1e-5)


@pytest.mark.parametrize("content,message", [
    (b"this is text", "not a readable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not a readable image|corrupt or truncated"),
])
def test_non_images_fail_in_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(U2Error, match=message) as exc:
        read_image(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_truncated_jpeg(tmp_path: Path, rng) -> None:
    Image.fromarray(_rgb(rng, 200, 200)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(U2Error, match="cut.jpg: corrupt or truncated image"):
        read_image(tmp_path / "cut.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, monkeypatch, rng) -> None:
    Image.fromarray(_rgb(rng, 100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(images_module, "MAX_PIXELS", 5_000)
    with pytest.raises(U2Error, match="big.png: 100×100 pixels is over the 5,000 limit"):
        read_image(tmp_path / "big.png")


def test_pillow_bomb_error_is_one_line(tmp_path: Path, monkeypatch, rng) -> None:
    Image.fromarray(_rgb(rng, 100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(U2Error, match="big.png"):
        read_image(tmp_path / "big.png")


def test_list_images(tmp_path: Path, rng) -> None:
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]
    with pytest.raises(U2Error, match="no such file or folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(U2Error, match="no images found"):
        list_images(tmp_path / "empty")
