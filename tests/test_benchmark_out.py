"""`u2bench benchmark --out OUT` deletes or replaces only what it wrote there itself (issue 22, section 3).

Each case the issue names is here: ``--calib`` inside OUT (the run that deleted a user's 20 images), a links
folder that is not the benchmark's, a file of the user's under a name a stage writes, a file changed since
the benchmark wrote it; and the stages' own outputs: the TensorRT stages' intermediates never land on the
ONNX stages' artifacts, and the INT8 engine's cache key and rebuild command carry --calib-num and --seed.
None of these needs the dataset: each refusal comes before any work.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2deploy.bench.benchmark.build import BuildContext, artifact_path
from u2deploy.bench.benchmark.calibration import calibration_folder, links_folder
from u2deploy.bench.benchmark.outdir import LEDGER, OutFolder
from u2deploy.bench.benchmark.targets import Target, all_names
from u2deploy.errors import U2Error
from u2deploy.export import stages
from u2deploy.export.trt import build_folder
from u2deploy.formats import by_key


def _images(folder: Path, n: int, start: int = 1) -> dict[str, bytes]:
    """``n`` small JPEGs named like ECSSD's (0001.jpg, …); their bytes, to prove them untouched."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


def _benchmark(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "u2deploy.cli.bench", "benchmark", "--data", str(data),
                           "--formats", "onnx:fp32,onnx:int8", "--size", "64", *args],
                          capture_output=True, text=True, timeout=300)


def _one_line(run: subprocess.CompletedProcess) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 1 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


def test_calib_inside_out_is_refused_and_the_images_are_left_alone(tmp_path: Path) -> None:
    """The issue's command: --calib OUT/calib_0001-0020 --calib-subset 0001-0020 --out OUT."""
    out = tmp_path / "OUT"
    calib = out / "calib_0001-0020"
    before = _images(calib, 20)
    run = _benchmark(tmp_path, "--calib", str(calib), "--calib-subset", "0001-0020", "--out", str(out))
    assert f"--calib {calib} lies inside --out {out}" in _one_line(run)
    assert _contents(calib) == before and not any(p.is_symlink() for p in calib.iterdir())
    assert sorted(p.name for p in out.iterdir()) == ["calib_0001-0020"]  # no ledger, nothing else made


def test_a_file_of_the_users_in_out_is_never_replaced(tmp_path: Path) -> None:
    """Their own u2netp_64x64.onnx under the very name the ONNX stage writes: refused before any work."""
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "u2netp_64x64.onnx").write_bytes(b"exported from the authors' checkpoint")
    run = _benchmark(tmp_path, "--calib", str(tmp_path / "calib"), "--out", str(out))
    line = _one_line(run)
    assert "u2netp_64x64.onnx was not written by u2bench benchmark" in line and "choose another --out" in line
    assert (out / "u2netp_64x64.onnx").read_bytes() == b"exported from the authors' checkpoint"
    assert sorted(p.name for p in out.iterdir()) == ["u2netp_64x64.onnx"]


def test_data_and_weights_inside_out_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "OUT"
    for flag in ("--data", "--weights"):
        with pytest.raises(U2Error, match=f"{flag} .* lies inside --out"):
            OutFolder.open(out, inputs=[(flag, out / "inside")])
    assert not out.exists()


def test_the_ledger_accounts_for_everything_and_notices_a_change(tmp_path: Path) -> None:
    out = tmp_path / "OUT"
    folder = OutFolder.open(out)
    (out / "m.onnx").write_bytes(b"model")
    (out / "m.build").mkdir()
    (out / "m.build" / "x.onnx").write_bytes(b"intermediate")
    folder.record()
    ledger = json.loads((out / LEDGER).read_text())["entries"]
    assert set(ledger) == {"m.onnx", "m.build", "m.build/x.onnx"} and ledger["m.onnx"]["sha256"]
    OutFolder.open(out)  # all of it the benchmark's: accepted
    (out / "m.build" / "x.onnx").write_bytes(b"someone else's")
    with pytest.raises(U2Error, match=r"m\.build/x\.onnx changed since u2bench benchmark wrote it"):
        OutFolder.open(out)
    (out / "m.build" / "x.onnx").write_bytes(b"intermediate")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(U2Error, match=r"notes\.txt was not written by u2bench benchmark"):
        OutFolder.open(out)
    (out / "notes.txt").unlink()
    OutFolder.open(out, user_outputs=[out / "b.json"])
    (out / "b.json").write_text("{}")  # the run's own --json, named by the user: not in the way
    OutFolder.open(out, user_outputs=[out / "b.json"])
    (out / LEDGER).write_text("{broken")
    with pytest.raises(U2Error, match=f"{LEDGER} is unreadable"):
        OutFolder.open(out)


def test_a_links_folder_that_is_not_the_benchmarks_is_refused(tmp_path: Path) -> None:
    calib = tmp_path / "ECSSD" / "images"
    _images(calib, 6)
    out = tmp_path / "OUT"
    folder = OutFolder.open(out)
    theirs = links_folder(out, "0001-0004")
    before = _images(theirs, 4)  # made by hand inside an OUT of the benchmark's
    with pytest.raises(U2Error, match="was not written by u2bench benchmark"):
        OutFolder.open(out)  # the next run stops before any work …
    with pytest.raises(U2Error, match="not the links folder u2bench benchmark made"):
        calibration_folder(calib, "0001-0004", folder)  # … and the links step on its own, too
    assert _contents(theirs) == before


def test_the_links_are_the_benchmarks_and_only_they_are_removed(tmp_path: Path) -> None:
    calib = tmp_path / "ECSSD" / "images"
    originals = _images(calib, 6)
    out = tmp_path / "OUT"
    links = calibration_folder(calib, "0001-0004", OutFolder.open(out))
    assert sorted(p.name for p in links.iterdir()) == [f"{i:04d}.jpg" for i in range(1, 5)]
    assert all(p.is_symlink() and p.resolve().parent == calib.resolve() for p in links.iterdir())
    folder = OutFolder.open(out)  # a rerun: the links are in the ledger
    (calib / "0002.jpg").rename(calib / "0009.jpg")  # the range now holds three images
    links = calibration_folder(calib, "0001-0004", folder)
    assert sorted(p.name for p in links.iterdir()) == ["0001.jpg", "0003.jpg", "0004.jpg"]
    assert _contents(calib) == {**{k: v for k, v in originals.items() if k != "0002.jpg"},
                                "0009.jpg": originals["0002.jpg"]}
    with pytest.raises(U2Error, match="is the folder --calib-subset 0001-0004 writes its links into"):
        calibration_folder(links, "0001-0004", OutFolder.open(out))


def _context(tmp_path: Path, calib: Path) -> BuildContext:
    return BuildContext(tmp_path, "small", None, "0" * 64, (64, 64), calib, "digest", "all", 8, 3)


def test_no_two_stages_write_the_same_file(tmp_path: Path) -> None:
    """trt:fp16 once wrote its FP16 ONNX over onnx:fp16's artifact; now every stage's files are its own."""
    ctx = _context(tmp_path, tmp_path)
    targets = [Target(by_key(k), p) for k, p in (n.split(":") for n in all_names()) if k != "torch"]
    assert {t.fmt.key for t in targets} == {"onnx", "trt", "openvino", "web"}
    written: dict[Path, str] = {}
    for target in targets:
        path = artifact_path(tmp_path, ctx.variant, ctx.size, target)
        assert path == ctx.request(target, None).output
        files = [path, path.with_name(path.name + ".json")]
        files += [path.with_suffix(".bin")] if path.suffix == ".xml" else []
        files += [build_folder(path)] if path.suffix == ".engine" else []
        for file in files:
            assert file not in written, f"{target.name} and {written.get(file)} both write {file.name}"
            written[file] = target.name
    engine = artifact_path(tmp_path, ctx.variant, ctx.size, Target(by_key("trt"), "fp16"))
    assert build_folder(engine) == tmp_path / "u2netp_64x64_fp16.build"


def test_the_int8_engine_honours_calib_num_and_seed(tmp_path: Path) -> None:
    """Its cache key and its rebuild command say which images the Q/DQ stage draws: --calib-num, --seed."""
    (tmp_path / "u2netp_64x64.onnx").write_bytes(b"fp32 onnx")
    ctx = _context(tmp_path, tmp_path / "calib")
    request = ctx.request(Target(by_key("trt"), "int8"), tmp_path / "u2netp_64x64.onnx")
    assert request.output == artifact_path(tmp_path, "small", (64, 64), Target(by_key("trt"), "int8"))
    stage = stages.trt_engine(request)
    assert (stage.key["num"], stage.key["seed"], stage.key["calib_images"]) == (8, 3, "digest")
    args = shlex.split(stage.command(request))
    assert args[:3] == ["u2export", "trt", "--onnx"] and "--int8" in args
    assert args[args.index("--calib-images") + 1] == "8" and args[args.index("--calib-seed") + 1] == "3"
