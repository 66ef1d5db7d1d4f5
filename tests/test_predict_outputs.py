"""`u2bench predict` never touches a user's file it was not asked to write, and says what it skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from u2deploy.bench import predict as predict_module
from u2deploy.cli.bench import app
from u2deploy.data.images import list_images
from u2deploy.errors import U2Error


def _image(path: Path, seed: int = 0, shape: tuple[int, int] = (40, 52)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _snapshot(*folders: Path) -> dict[Path, bytes | str]:
    """Every entry under the folders: bytes of files, the target of symlinks, '<dir>' for folders."""
    seen: dict[Path, bytes | str] = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            seen[p] = (f"-> {os.readlink(p)}" if p.is_symlink() else "<dir>" if p.is_dir() else p.read_bytes())
    return seen


def _predict(model: Path, *args: str):
    return CliRunner().invoke(app, ["predict", "--model", str(model), *args])


def _refused(result, *fragments: str) -> str:
    """The run ended in one U2Error line (the console script prints it as `u2bench: error: …`)."""
    assert isinstance(result.exception, U2Error), (result.exception, result.output)
    message = str(result.exception)
    assert "\n" not in message and result.exit_code == 1
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_output_folder_that_holds_the_inputs_never_overwrites_them(tmp_path: Path, small_onnx: Path) -> None:
    photos = tmp_path / "photos"
    _image(photos / "a.png", 1), _image(photos / "b.jpg", 2)
    before = _snapshot(photos)
    _refused(_predict(small_onnx, "--images", str(photos), "-o", str(photos)), "a.png", "input")
    _refused(_predict(small_onnx, "--images", str(photos), "-o", str(photos), "--overwrite"), "a.png", "input")
    assert _snapshot(photos) == before  # not even b.png was written: refused before any work
    # A hard link to an input is an input too, even under another name or folder.
    out = tmp_path / "out"
    out.mkdir()
    os.link(photos / "a.png", out / "a.png")
    result = _predict(small_onnx, "--images", str(photos / "a.png"), "-o", str(out), "--overwrite")
    _refused(result, str(out / "a.png"), "input image")
    assert _snapshot(photos) == before


@pytest.mark.parametrize("layout", ["one folder", "two folders", "same file twice"])
def test_inputs_that_would_write_the_same_mask_are_refused_naming_both(tmp_path: Path, small_onnx: Path,
                                                                     layout: str) -> None:
    if layout == "one folder":
        first, second = _image(tmp_path / "in" / "a.jpg", 1), _image(tmp_path / "in" / "a.png", 2)
        args = ["--images", str(tmp_path / "in")]
    elif layout == "two folders":
        first, second = _image(tmp_path / "d1" / "x.jpg", 1), _image(tmp_path / "d2" / "x.jpg", 2)
        args = ["--images", str(tmp_path / "d1"), "--images", str(tmp_path / "d2")]
    else:
        first = second = _image(tmp_path / "in" / "x.jpg", 1)
        args = ["--images", str(tmp_path / "in"), "--images", str(first)]
    out = tmp_path / "out"
    _refused(_predict(small_onnx, *args, "-o", str(out)), f"{first} and {second} would both write {out}/")
    assert not out.exists()  # before any work: not even the folder


def test_existing_outputs_need_overwrite_or_skip_existing(tmp_path: Path, small_onnx: Path) -> None:
    images = tmp_path / "in"
    for i in range(3):
        _image(images / f"img{i}.png", i)
    out = tmp_path / "out"
    first = _predict(small_onnx, "--images", str(images), "-o", str(out), "--cutout")
    assert first.exit_code == 0, first.output
    assert "wrote 3 masks and 3 cut-outs" in first.stdout
    (out / "img0.png").write_bytes(b"the user's edited mask")
    (out / "cutouts" / "img2.png").unlink()
    before = _snapshot(images, out)

    _refused(_predict(small_onnx, "--images", str(images), "-o", str(out), "--cutout"),
             str(out / "img0.png"), "already exists", "--overwrite", "--skip-existing")
    assert _snapshot(images, out) == before
    both = _predict(small_onnx, "--images", str(images), "-o", str(out), "--overwrite", "--skip-existing")
    _refused(both, "--overwrite and --skip-existing")

    resumed = _predict(small_onnx, "--images", str(images), "-o", str(out), "--cutout", "--skip-existing")
    assert resumed.exit_code == 0, resumed.output
    assert "wrote 0 masks and 1 cut-out " in resumed.stdout and "2 images skipped" in resumed.stdout
    after = _snapshot(images, out)
    assert after.pop(out / "cutouts" / "img2.png")  # the missing one, and nothing else, was written
    assert after == before

    replaced = _predict(small_onnx, "--images", str(images), "-o", str(out), "--overwrite")
    assert replaced.exit_code == 0 and "wrote 3 masks" in replaced.stdout
    assert (out / "img0.png").read_bytes() != b"the user's edited mask"
    assert _snapshot(images) == {p: v for p, v in before.items() if p.is_relative_to(images)}


def test_unusable_output_folders_are_one_line_errors_before_any_work(tmp_path: Path, small_onnx: Path,
                                                                    monkeypatch) -> None:
    image = str(_image(tmp_path / "in" / "a.png"))
    regular = tmp_path / "notes.txt"
    regular.write_text("mine")
    _refused(_predict(small_onnx, "--images", image, "-o", str(regular)), str(regular), "not a folder")
    _refused(_predict(small_onnx, "--images", image, "-o", str(regular / "sub")), str(regular), "not a folder")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cutouts").write_text("mine")
    _refused(_predict(small_onnx, "--images", image, "-o", str(out), "--cutout"), "cutouts", "not a folder")
    assert regular.read_text() == "mine" and (out / "cutouts").read_text() == "mine"

    # A folder that refuses new files (what a read-only folder does for anyone but root).
    import u2deploy.files as files_module

    real = files_module.tempfile.NamedTemporaryFile
    readonly = {tmp_path / "ro", tmp_path / "ro2" / "cutouts"}

    def refusing(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        if Path(dir) in readonly:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(files_module.tempfile, "NamedTemporaryFile", refusing)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro2" / "cutouts").mkdir(parents=True)
    for args, where in ((["-o", str(tmp_path / "ro")], "ro"), (["-o", str(tmp_path / "ro" / "new")], "new"),
                        (["-o", str(tmp_path / "ro2"), "--cutout"], "cutouts")):
        _refused(_predict(small_onnx, "--images", image, *args), where, "Permission denied")
    assert not any((tmp_path / "ro").iterdir()) and not (tmp_path / "ro2" / "a.png").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path: Path, small_onnx: Path) -> None:
    image = str(_image(tmp_path / "in" / "a.png"))
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        _refused(_predict(small_onnx, "--images", image, "-o", str(ro)), str(ro), "cannot write")
        _refused(_predict(small_onnx, "--images", image, "-o", str(ro / "x")), str(ro / "x"), "cannot")
    finally:
        ro.chmod(0o755)


def test_folder_entries_that_are_not_images_are_reported(tmp_path: Path, small_onnx: Path, monkeypatch) -> None:
    images = tmp_path / "in"
    _image(images / "good.png")
    frames = [Image.fromarray(np.full((30, 36, 3), v, np.uint8)) for v in (10, 120, 240)]
    frames[0].save(images / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    (images / "folder.jpg").mkdir()
    (images / "dangling.jpg").symlink_to(images / "gone.jpg")
    (images / "loop.png").symlink_to(images / "loop.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    (images / "notes.txt").write_text("not named like an image: not listed, not reported")

    skipped: list[tuple[Path, str]] = []
    assert [p.name for p in list_images(images, skipped=skipped)] == ["anim.gif", "broken.jpg", "good.png"]
    assert [(p.name, why.split(" ")[0]) for p, why in skipped] == [
        ("dangling.jpg", "dangling"), ("folder.jpg", "a"), ("loop.png", "symlink")]

    import tqdm

    written: list[str] = []
    real_write = tqdm.tqdm.write.__func__

    def spy(cls, s, *args, **kwargs):
        written.append(s)
        return real_write(cls, s, *args, **kwargs)

    monkeypatch.setattr(tqdm.tqdm, "write", classmethod(spy))
    out = tmp_path / "out"
    result = _predict(small_onnx, "--images", str(images), "-o", str(out))
    assert result.exit_code == 1  # broken.jpg failed
    assert "wrote 2 masks" in result.stdout and "3 folder entries skipped" in result.stdout
    assert "1 image failed" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["anim.png", "good.png"]  # GIFs in a folder count too
    lines = result.stderr.splitlines()
    for name, why in (("folder.jpg", "a folder"), ("dangling.jpg", "dangling symlink"), ("loop.png", "symlink loop"),
                      ("broken.jpg", "not a readable image")):
        assert sum(name in line and why in line for line in lines) == 1, result.stderr
        assert sum(name in line for line in written) == 1  # through the bar's own write: no garbled bar
    assert "Traceback" not in result.output


def test_when_every_image_fails_there_is_no_hint_and_no_empty_folder(tmp_path: Path, small_onnx: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"junk")
    (images / "b.png").write_bytes(b"")
    out = tmp_path / "new" / "out"
    result = _predict(small_onnx, "--images", str(images), "-o", str(out), "--cutout")
    assert result.exit_code == 1 and "next:" not in result.output
    assert "wrote no masks: 2 images failed" in result.stdout
    assert not (tmp_path / "new").exists()  # it created new/, new/out/ and cutouts/: all gone
    mine = tmp_path / "mine"
    mine.mkdir()
    assert _predict(small_onnx, "--images", str(images), "-o", str(mine)).exit_code == 1
    assert mine.is_dir()  # the user's own (empty) folder stays


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_masks_and_cutouts_get_the_users_file_mode(tmp_path: Path, small_onnx: Path, umask: int) -> None:
    image = str(_image(tmp_path / "in" / "a.png"))
    old = os.umask(umask)
    try:
        result = _predict(small_onnx, "--images", image, "-o", str(tmp_path / "out"), "--cutout")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "out" / "a.png", tmp_path / "out" / "cutouts" / "a.png"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("where", ["between batches", "inside a write"])
def test_ctrl_c_exits_130_keeps_finished_masks_and_leaves_no_temp_files(tmp_path: Path, small_onnx: Path,
                                                                        monkeypatch, where: str) -> None:
    images = tmp_path / "in"
    for i in range(3):
        _image(images / f"img{i}.png", i)
    out = tmp_path / "out"
    calls = {"n": 0}
    if where == "between batches":
        real = predict_module.run_batched

        def interrupted(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(predict_module, "run_batched", interrupted)
    else:
        real_save = Image.Image.save

        def interrupted_save(self, fp, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                Path(fp).write_bytes(b"half a png")
                raise KeyboardInterrupt
            return real_save(self, fp, *args, **kwargs)

        monkeypatch.setattr(Image.Image, "save", interrupted_save)
    # One stream: the calls are made in input order, so "the second call" is img1's.
    result = _predict(small_onnx, "--images", str(images), "-o", str(out), "--batch", "1", "--streams", "1")
    monkeypatch.undo()
    assert result.exit_code == 130
    lines = [line for line in result.stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and f"1 mask written to {out} and kept" in lines[0], result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["img0.png"]  # no temporaries, no half files
    assert Image.open(out / "img0.png").size == (52, 40)

    resumed = _predict(small_onnx, "--images", str(images), "-o", str(out), "--skip-existing")
    assert resumed.exit_code == 0 and "wrote 2 masks" in resumed.stdout and "1 image skipped" in resumed.stdout
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_a_failed_write_is_one_line_and_keeps_what_was_written(tmp_path: Path, small_onnx: Path,
                                                              monkeypatch) -> None:
    images = tmp_path / "in"
    for i in range(2):
        _image(images / f"img{i}.png", i)
    real_save = Image.Image.save
    calls = {"n": 0}

    def full_disk(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "out"
    _refused(_predict(small_onnx, "--images", str(images), "-o", str(out)),
             str(out / "img1.png"), "No space left on device", "kept the 1 mask written before it")
    assert sorted(p.name for p in out.iterdir()) == ["img0.png"]
