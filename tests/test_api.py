"""`u2deploy.remove` / `u2deploy.mask`: the pixels `u2bench predict` writes, from one call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import u2deploy
from conftest import ECSSD
from u2deploy.cli.bench import app as bench_app
from u2deploy.errors import U2Error


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six held-out ECSSD photos where present (else generated ones), plus a rotated-EXIF and a grayscale one."""
    from u2deploy.data.samples import generated_images

    folder = tmp_path_factory.mktemp("photos")
    if (ECSSD / "images").is_dir():
        sources = [np.asarray(Image.open(ECSSD / "images" / f"{i:04d}.jpg").convert("RGB")) for i in range(801, 807)]
    else:
        sources = generated_images(6, seed=4, size=(90, 120))
    paths = []
    for i, pixels in enumerate(sources):
        paths.append(folder / f"{i}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.fromarray(sources[0]).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(sources[1]).convert("L").save(folder / "gray.png")
    return [*paths, folder / "rotated.jpg", folder / "gray.png"]


def _predict(model: Path, photos: list[Path], out: Path, *extra: str) -> None:
    result = CliRunner().invoke(bench_app, ["predict", "--model", str(model), "--images", str(photos[0].parent),
                                            "-o", str(out), *extra])
    assert result.exit_code == 0, result.output


def test_mask_and_remove_equal_predict_for_every_input_kind(small_onnx, photos, tmp_path):
    _predict(small_onnx, photos, tmp_path / "out", "--cutout")
    model = u2deploy.open_model(small_onnx)
    for path in photos:
        expected = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png"))
        for given in (path, str(path), Image.open(path)):
            got = u2deploy.mask(given, model=model)
            assert got.mode == "L" and got.size == (expected.shape[1], expected.shape[0])
            np.testing.assert_array_equal(np.asarray(got), expected, err_msg=f"{path.name} as {type(given)}")
        cut = u2deploy.remove(path, model=small_onnx)  # by name: opened once, cached
        assert cut.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(cut), np.asarray(Image.open(tmp_path / "out" / "cutouts" /
                                                                            f"{path.stem}.png")))
    rgb = np.asarray(Image.open(photos[2]).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(u2deploy.mask(rgb, model=model)),
                                  np.asarray(Image.open(tmp_path / "out" / f"{photos[2].stem}.png")))
    model.close()


def test_threshold_and_background_match_predicts_flags(small_onnx, photos, tmp_path):
    _predict(small_onnx, photos, tmp_path / "out", "--threshold", "0.5", "--background", "white")
    got = u2deploy.remove(photos[3], model=small_onnx, threshold=0.5, background=(255, 255, 255))
    assert got.mode == "RGB"
    mask = np.asarray(u2deploy.mask(photos[3], model=small_onnx, threshold=0.5))
    assert set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask, np.asarray(Image.open(tmp_path / "out" / f"{photos[3].stem}.png")))
    # the JPEG cut-out is lossy: compare the composited pixels before encoding through the mask's support
    assert np.asarray(got)[mask == 0].min() == 255


def test_bad_inputs_are_one_line(small_onnx, tmp_path):
    with pytest.raises(U2Error, match="no such image file"):
        u2deploy.mask(tmp_path / "missing.jpg", model=small_onnx)
    with pytest.raises(U2Error, match="expected H×W×3 uint8"):
        u2deploy.mask(np.zeros((4, 4, 3), np.float32), model=small_onnx)
    with pytest.raises(U2Error, match="expected a path"):
        u2deploy.remove(42, model=small_onnx)  # type: ignore[arg-type]
    with pytest.raises(U2Error):
        u2deploy.mask(np.zeros((8, 8, 3), np.uint8), model=tmp_path / "nope.onnx")
