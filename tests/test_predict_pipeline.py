"""The predict pipeline: overlapped stages, in-order commits, flat memory, clean stops; no PyTorch on the
ONNX path; the folder-job options (--recursive, --threshold, --background, --cutout-format)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from u2deploy.bench import pipeline
from u2deploy.bench import predict as predict_module
from u2deploy.cli.bench import app
from u2deploy.data.images import image_tree
from u2deploy.errors import U2Error


def _stages(n_items: int, *, fail_load=(), fail_infer=None, fail_write=None, jitter: float = 0.002):
    """load/infer/write callables over integer items; what was written, and in-flight bookkeeping."""
    written: list[int] = []
    failed: list[int] = []
    live = {"now": 0, "max": 0}
    lock = threading.Lock()
    rng = random.Random(0)

    def load(i: int):
        with lock:
            live["now"] += 1
            live["max"] = max(live["max"], live["now"])
        time.sleep(rng.random() * jitter)
        if i in fail_load:
            with lock:
                live["now"] -= 1
            raise U2Error(f"item {i}: unreadable")
        return np.full((1, 2, 2), i, np.float32), i

    def infer(x: np.ndarray) -> np.ndarray:
        time.sleep(rng.random() * jitter)
        if fail_infer is not None and fail_infer in x[:, 0, 0, 0]:
            raise KeyboardInterrupt
        return x + 0.5

    def write(item: int, keep: int, pred: np.ndarray) -> None:
        assert keep == item and pred[0, 0, 0] == item + 0.5
        if item == fail_write:
            raise U2Error(f"item {item}: cannot write (No space left on device)")
        written.append(item)
        with lock:
            live["now"] -= 1

    def on_failed(item: int, exc: U2Error) -> None:
        failed.append(item)

    return load, infer, write, on_failed, written, failed, live


@pytest.mark.parametrize("batch,streams,loaders", [(1, 1, 1), (1, 2, 2), (3, 2, 3), (8, 1, 2)])
def test_every_item_is_written_once_in_input_order(batch: int, streams: int, loaders: int) -> None:
    load, infer, write, on_failed, written, failed, live = _stages(60, fail_load={7, 8, 30})
    pipeline.run(list(range(60)), load, infer, write, on_failed, batch=batch, streams=streams, loaders=loaders)
    assert written == [i for i in range(60) if i not in (7, 8, 30)]
    assert failed == [7, 8, 30]


def test_memory_stays_flat_however_many_items() -> None:
    load, infer, write, on_failed, written, _, live = _stages(3000, jitter=0)
    pipeline.run(list(range(3000)), load, infer, write, on_failed, batch=4, streams=2, loaders=2, in_flight=20)
    assert len(written) == 3000
    assert live["max"] <= 20  # items between the start of their load and the end of their write


@pytest.mark.parametrize("streams", [1, 2])
def test_an_interrupted_inference_keeps_exactly_the_items_before_it(streams: int) -> None:
    load, infer, write, on_failed, written, _, _ = _stages(40, fail_infer=13)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(list(range(40)), load, infer, write, on_failed, batch=1, streams=streams, loaders=2)
    assert written == list(range(13))  # every item before the unfinished one, and nothing after it


def test_a_failed_write_stops_the_run_after_what_came_before() -> None:
    load, infer, write, on_failed, written, _, _ = _stages(40, fail_write=5)
    with pytest.raises(U2Error, match="item 5: cannot write"):
        pipeline.run(list(range(40)), load, infer, write, on_failed, batch=2, streams=2, loaders=2)
    assert written == [0, 1, 2, 3, 4]


def test_a_bug_in_a_stage_is_raised_not_swallowed() -> None:
    def load(i):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        pipeline.run([1, 2, 3], load, lambda x: x, lambda *a: None, lambda *a: None)


# ------------------------------------------------------------------------------------------------ CLI


def _image(path: Path, seed: int = 0, shape: tuple[int, int] = (40, 52)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    blob = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 3) ** 2)
    rgb = np.where(blob[..., None], [220, 60, 40], [30, 90, 200]).astype(np.uint8)
    rgb = np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _predict(model: Path, *args: str):
    return CliRunner().invoke(app, ["predict", "--model", str(model), *args])


def test_an_interrupted_inference_with_two_streams_keeps_the_masks_before_it(tmp_path: Path, small_onnx: Path,
                                                                            monkeypatch) -> None:
    from u2deploy.data import preprocess
    from u2deploy.data.images import read_image

    images = tmp_path / "in"
    for i in range(5):
        _image(images / f"img{i}.png", i)
    poisoned = preprocess.fast([read_image(images / "img2.png")], (64, 64))[0]
    real = predict_module.run_batched

    def interrupted(runner, x, *args):
        if any(np.array_equal(row, poisoned) for row in x):
            raise KeyboardInterrupt
        return real(runner, x, *args)

    monkeypatch.setattr(predict_module, "run_batched", interrupted)
    out = tmp_path / "out"
    result = _predict(small_onnx, "--images", str(images), "-o", str(out), "--batch", "1", "--streams", "2")
    assert result.exit_code == 130
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png"]
    assert "2 masks written" in result.stderr


def test_recursive_mirrors_the_tree_and_never_reads_its_own_output(tmp_path: Path, small_onnx: Path) -> None:
    photos = tmp_path / "photos"
    _image(photos / "a.jpg", 1)
    _image(photos / "trip" / "b.png", 2)
    _image(photos / "trip" / "day2" / "c.jpg", 3)
    (photos / "empty").mkdir()
    out = photos / "masks"  # inside the input tree
    first = _predict(small_onnx, "--images", str(photos), "-o", str(out), "--recursive", "--cutout")
    assert first.exit_code == 0, first.output
    assert "wrote 3 masks and 3 cut-outs" in first.stdout and "images/s" in first.stdout
    for rel in ("a.png", "trip/b.png", "trip/day2/c.png", "cutouts/a.png", "cutouts/trip/b.png",
                "cutouts/trip/day2/c.png"):
        assert (out / rel).is_file(), rel
    assert not (out / "empty").exists()  # folders are made for outputs only
    assert Image.open(out / "trip" / "day2" / "c.png").size == (52, 40)

    (out / "trip" / "b.png").unlink()
    again = _predict(small_onnx, "--images", str(photos), "-o", str(out), "--recursive", "--cutout",
                     "--skip-existing")
    assert again.exit_code == 0, again.output
    assert "wrote 1 mask to" in again.stdout and "2 images skipped" in again.stdout
    assert "the output folder" in again.stderr  # reported once, not predicted on

    flat = _predict(small_onnx, "--images", str(photos), "-o", str(tmp_path / "flat"))
    assert flat.exit_code == 0 and "wrote 1 mask " in flat.stdout  # without -r: the top folder only


def test_recursive_refuses_two_images_that_would_write_one_file(tmp_path: Path, small_onnx: Path) -> None:
    photos = tmp_path / "photos"
    _image(photos / "x.jpg", 1)
    _image(photos / "cutouts" / "x.png", 2)  # its mask would be the cut-out of x.jpg
    out = tmp_path / "out"
    result = _predict(small_onnx, "--images", str(photos), "-o", str(out), "--recursive", "--cutout")
    assert isinstance(result.exception, U2Error) and "would both write" in str(result.exception)
    assert not out.exists()


def test_threshold_background_and_formats(tmp_path: Path, small_onnx: Path) -> None:
    image = _image(tmp_path / "in" / "a.png", 4)
    out = tmp_path / "out"
    result = _predict(small_onnx, "--images", str(image), "-o", str(out), "--threshold", "0.5",
                      "--background", "white")
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(out / "a.png"))
    assert set(np.unique(mask)) <= {0, 255}
    with Image.open(out / "cutouts" / "a.jpg") as jpg:
        assert jpg.format == "JPEG" and jpg.mode == "RGB" and jpg.size == (52, 40)
        pixels = np.asarray(jpg).astype(int)
    assert np.abs(pixels[mask == 0] - 255).mean() < 8  # the background is white where the mask is off

    webp = _predict(small_onnx, "--images", str(image), "-o", str(tmp_path / "w"), "--cutout-format", "webp")
    assert webp.exit_code == 0, webp.output
    with Image.open(tmp_path / "w" / "cutouts" / "a.webp") as im:
        assert im.format == "WEBP" and im.mode == "RGBA"
    for args, fragment in ((["--cutout-format", "jpg"], "no transparency"), (["--threshold", "2"], "between 0 and 1"),
                           (["--background", "nocolour"], "not a colour"), (["--cutout-format", "gif"], "png, jpg")):
        bad = _predict(small_onnx, "--images", str(image), "-o", str(tmp_path / "bad"), *args)
        assert isinstance(bad.exception, U2Error) and fragment in str(bad.exception), (args, bad.output)
    assert not (tmp_path / "bad").exists()


def test_streams_apply_to_onnx_runtime_on_the_cpu_only(tmp_path: Path, small_weights: Path) -> None:
    assert predict_module.inference_split("m.onnx", "cpu", threads=4, streams=2) == (2, 2)
    assert predict_module.inference_split("m.onnx", "cpu", threads=1) == (1, 1)
    assert predict_module.inference_split("torch:small", "cpu") == (1, None)
    assert predict_module.inference_split("m.engine", "cuda") == (1, None)
    with pytest.raises(U2Error, match="--streams 2"):
        predict_module.inference_split("torch:small", "cpu", streams=2)


def test_image_tree_reports_what_it_does_not_follow(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _image(root / "a.png")
    _image(root / "s" / "b.png")
    (root / "s" / "up").symlink_to(root)  # a loop back to the top
    skipped: list[tuple[Path, str]] = []
    found = image_tree(root, recursive=True, skipped=skipped)
    assert [(p.name, str(sub)) for p, sub in found] == [("a.png", "."), ("b.png", "s")]
    assert [why.split(";")[0] for _, why in skipped] == ["a symlink to a folder already being listed"]


def test_an_onnx_predict_never_imports_torch(tmp_path: Path, small_onnx: Path) -> None:
    images = tmp_path / "in"
    for i in range(3):
        _image(images / f"img{i}.png", i)
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
            "sys.argv = ['u2bench', 'predict', '--model', sys.argv[1], '--images', sys.argv[2], '-o', sys.argv[3],"
            " '--cutout']\n"
            "from u2deploy.cli.bench import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'skimage', 'scipy', 'matplotlib') if sys.modules.get(m)]\n"
            "assert not heavy, heavy\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", code, str(small_onnx), str(images), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote 3 masks and 3 cut-outs" in result.stdout
