"""Every export stage verifies what it wrote against its source before the file appears (validate/verify.py).

The images (``--verify-images``, held-out ECSSD, ``--calib`` images calibration did not draw, generated
ones), the bounds of the one table, the manifest's ``verification`` object, and what a broken bound
leaves: nothing, and one line with the measured values and the bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import needs_ecssd
from u2deploy.calibration.dataset import sample_images
from u2deploy.cli.export import app
from u2deploy.errors import U2Error
from u2deploy.validate import verify as verify_module
from u2deploy.validate.verify import Verification, choose_verification_images, verify


def _images(folder: Path, n: int, seed: int = 3) -> Path:
    from u2deploy.data.samples import generated_images

    folder.mkdir()
    for i, image in enumerate(generated_images(n, seed=seed, size=(70, 90))):
        Image.fromarray(image).save(folder / f"v{i:02d}.png")
    return folder


def _no_ecssd(monkeypatch, tmp_path: Path) -> None:
    """A machine without ../shared: U2DEPLOY_SHARED names an empty folder, which is searched first."""
    empty = tmp_path / "no_shared"
    empty.mkdir()
    monkeypatch.setenv("U2DEPLOY_SHARED", str(empty))


def test_images_come_from_the_first_source_that_has_them(tmp_path, calib_dir, monkeypatch):
    mine = _images(tmp_path / "mine", 3)
    chosen = choose_verification_images(mine, calib_dir, n=8)
    assert (chosen.source, len(chosen.images)) == ("verify-images", 3)
    assert chosen.to_manifest()["files"] == ["v00.png", "v01.png", "v02.png"]
    drawn = [mine / "v00.png", mine / "v02.png"]
    assert choose_verification_images(mine, n=8, calib_drawn=drawn).to_manifest()["files"] == ["v01.png"]
    with pytest.raises(U2Error, match="calibration drew all of them"):
        choose_verification_images(mine, calib_drawn=sorted(mine.iterdir()))
    with pytest.raises(U2Error, match="--verify-images .*absent: no such folder"):
        choose_verification_images(tmp_path / "absent")

    _no_ecssd(monkeypatch, tmp_path)
    drawn = sample_images(calib_dir, 4, seed=0)
    rest = choose_verification_images(None, calib_dir, drawn, n=8)
    assert rest.source == "calib-not-drawn" and len(rest.images) == 2
    assert not {p.resolve() for p in rest.paths} & {p.resolve() for p in drawn}
    generated = choose_verification_images(None, calib_dir, sorted(calib_dir.iterdir()), n=5)
    assert (generated.source, len(generated.images), generated.paths) == ("generated", 5, ())


@needs_ecssd
def test_held_out_ecssd_comes_before_calib_and_leaves_out_what_calibration_drew():
    from u2deploy.data.samples import ecssd_root

    chosen = choose_verification_images(n=8)
    assert chosen.source == "ecssd-held-out" and len(chosen.images) == 8
    assert all(801 <= int(p.stem) <= 1000 for p in chosen.paths)
    drawn = [ecssd_root() / "images" / f"{i:04d}.jpg" for i in range(801, 901)]
    later = choose_verification_images(None, None, drawn, n=8)
    assert all(int(p.stem) > 900 for p in later.paths) and "100 used by calibration left out" in later.description


def test_the_bounds_of_each_precision_and_the_record():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 1, (4, 1, 16, 16)).astype(np.float32)
    x = np.zeros((4, 3, 16, 16), np.float32)

    def shifted(by):
        return lambda batch: reference[:len(batch)] + by

    int8 = verify(shifted(0.005), reference, x, "int8", candidate_name="q.onnx", reference_name="m.onnx")
    assert int8.passed is True and int8.worst.mean_abs == pytest.approx(0.005, abs=1e-6)
    record = int8.to_manifest()
    assert {"images", "bound", "passed", "max_abs", "mean_abs", "candidate", "reference"} <= set(record)
    assert record["bound"] == {"precision": "int8", "max_abs": None, "mean_abs": 0.01} and record["passed"] is True

    fp16 = verify(shifted(0.005), reference, x, "fp16", candidate_name="h.onnx", reference_name="m.onnx")
    assert fp16.passed is False
    with pytest.raises(U2Error) as exc:
        fp16.raise_if_failed("out/h.onnx")
    line = str(exc.value)
    assert line.startswith("out/h.onnx: breaks its bound, nothing written") and "\n" not in line
    assert "mean|Δ| 0.005" in line and "mean|Δ| ≤ 0.002" in line and "FAIL" in line

    fp32 = verify(lambda b: reference[:len(b)] + np.where(np.arange(256) == 7, 2e-4, 0).reshape(1, 1, 16, 16),
                  reference, x, "fp32")
    assert fp32.passed is False and fp32.worst.mean_abs < 0.001  # the max|Δ| bound alone breaks it
    nan = reference.copy()
    nan[0, 0, 0, 0] = np.nan
    assert verify(lambda b: nan, reference, x, "int8").passed is False

    skipped = Verification.skip("q.onnx", "m.onnx", "int8")
    skipped.raise_if_failed("q.onnx")  # nothing was measured: nothing to refuse
    assert skipped.to_manifest() | {"bound": None} == {
        "candidate": "q.onnx", "reference": "m.onnx", "bound": None, "passed": None, "skipped": True,
        "reason": "--no-verify", "images": None}


def test_a_runner_and_a_function_are_compared_alike(small_onnx):
    from u2deploy.engines import open_runner
    from u2deploy.ort_session import cpu_session, run_first_output

    chosen = choose_verification_images(n=3)
    x = chosen.inputs((64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with open_runner(str(small_onnx)) as runner:
        result = verify(runner, lambda b: run_first_output(cpu_session(small_onnx), b), x, "fp32", images=chosen)
    assert result.passed is True and result.worst.max_abs == 0.0
    assert result.to_manifest()["images"]["count"] == 3


def _quantize(*args: str):
    return CliRunner().invoke(app, ["quantize", *args])


def test_a_damaged_ranges_cache_writes_nothing(small_onnx, calib_dir, tmp_path):
    """The issue's case: every range of MODEL.calib.json divided by 30 (mean|Δ| 0.41 on real data, exit 0)."""
    from u2deploy.calibration.cache import CacheKey, save_ranges

    cache, out = tmp_path / "m.calib.json", tmp_path / "out"
    out.mkdir()
    flags = ["--calib", str(calib_dir), "--num", "6", "--target", "cpu", "--cache", str(cache)]
    good = _quantize(str(small_onnx), *flags, "-o", str(out / "good.onnx"))
    assert good.exit_code == 0, good.output
    manifest = json.loads((out / "good.onnx.json").read_text())["verification"]
    assert manifest["passed"] is True and manifest["mean_abs"] <= 0.01 and manifest["bound"]["mean_abs"] == 0.01
    stored = json.loads(cache.read_text())

    # Edited by hand: the ranges no longer match their digest, refused before they are used.
    edited = dict(stored, ranges={name: [lo / 30, hi / 30] for name, (lo, hi) in stored["ranges"].items()})
    cache.write_text(json.dumps(edited))
    refused = _quantize(str(small_onnx), *flags, "-o", str(out / "bad.onnx"))
    assert isinstance(refused.exception, U2Error), refused.output
    message = str(refused.exception)
    assert message.startswith(f"calibration cache {cache}: damaged or edited") and "delete it" in message
    assert json.loads(cache.read_text()) == edited  # kept as it was: the user decides

    # Damaged with a matching digest (what no check of the file can see): the verification refuses it.
    save_ranges(cache, CacheKey(**stored["key"]), {n: (lo / 30, hi / 30) for n, (lo, hi) in stored["ranges"].items()})
    broken = _quantize(str(small_onnx), *flags, "-o", str(out / "bad.onnx"))
    assert isinstance(broken.exception, U2Error), broken.output
    line = str(broken.exception)
    assert line.startswith(f"{out / 'bad.onnx'}: breaks its bound, nothing written") and "\n" not in line
    assert "mean|Δ| ≤ 0.01): FAIL" in line
    measured = float(line.split("mean|Δ| ")[1].split(";")[0])
    assert measured > 0.01
    assert sorted(p.name for p in out.iterdir()) == ["good.onnx", "good.onnx.json"]  # no artifact, temp or manifest

    skipped = _quantize(str(small_onnx), *flags, "--no-verify", "-o", str(out / "unchecked.onnx"))
    assert skipped.exit_code == 0 and "not verified (--no-verify)" in skipped.output
    record = json.loads((out / "unchecked.onnx.json").read_text())["verification"]
    assert record["skipped"] is True and record["passed"] is None


@pytest.mark.isa
def test_quantize_verifies_on_images_calibration_did_not_draw(small_onnx, calib_dir, tmp_path, monkeypatch):
    _no_ecssd(monkeypatch, tmp_path)
    out = tmp_path / "q.onnx"
    result = _quantize(str(small_onnx), "--calib", str(calib_dir), "--num", "4", "--target", "cpu",
                       "--cache", str(tmp_path / "c.json"), "-o", str(out))
    assert result.exit_code == 0, result.output
    images = json.loads(Path(f"{out}.json").read_text())["verification"]["images"]
    drawn = {p.name for p in sample_images(calib_dir, 4, seed=0)}
    assert images["source"] == "calib-not-drawn" and images["count"] == 2 and not drawn & set(images["files"])
    mine = _images(tmp_path / "mine", 2)
    again = _quantize(str(small_onnx), "--calib", str(calib_dir), "--num", "4", "--target", "cpu",
                      "--cache", str(tmp_path / "c.json"), "--verify-images", str(mine), "-o", str(tmp_path / "r.onnx"))
    assert again.exit_code == 0, again.output
    record = json.loads((tmp_path / "r.onnx.json").read_text())["verification"]
    assert record["images"]["source"] == "verify-images" and record["images"]["count"] == 2


def _tight_bounds(monkeypatch) -> None:
    """Bounds no real artifact meets, to show what a broken bound leaves behind."""
    from u2deploy.validate.tolerances import Tolerance

    monkeypatch.setattr(verify_module, "tolerance_for", lambda p: Tolerance(p, -1.0, 0.0, 0.0))


def test_fp16_writes_nothing_when_its_bound_breaks_and_says_when_skipped(small_onnx, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _tight_bounds(monkeypatch)
    result = CliRunner().invoke(app, ["fp16", str(small_onnx), "-o", str(out / "h.onnx")])
    assert isinstance(result.exception, U2Error), result.output
    assert "breaks its bound, nothing written" in str(result.exception) and "fp16 bound" in str(result.exception)
    assert list(out.iterdir()) == []
    skipped = CliRunner().invoke(app, ["fp16", str(small_onnx), "--no-verify", "-o", str(out / "h.onnx")])
    assert skipped.exit_code == 0, skipped.output
    assert json.loads((out / "h.onnx.json").read_text())["verification"]["skipped"] is True


def test_openvino_writes_nothing_when_its_bound_breaks(small_onnx, tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="needs the openvino extra")
    out = tmp_path / "out"
    out.mkdir()
    real = verify_module.tolerance_for
    _tight_bounds(monkeypatch)
    for flags in ([], ["--fp16"]):
        result = CliRunner().invoke(app, ["openvino", str(small_onnx), *flags, "-o", str(out / "m.xml")])
        assert isinstance(result.exception, U2Error), result.output
        assert "breaks its bound, nothing written" in str(result.exception)
        assert list(out.iterdir()) == []  # no xml, bin, manifest or staging folder
    monkeypatch.setattr(verify_module, "tolerance_for", real)
    ok = CliRunner().invoke(app, ["openvino", str(small_onnx), "--fp16", "-o", str(out / "m.xml")])
    assert ok.exit_code == 0 and "fp16 bound (mean|Δ| ≤ 0.002)" in ok.output, ok.output
    record = json.loads((out / "m.xml.json").read_text())["verification"]
    assert record["passed"] is True and record["reference_precision"] == "fp32"
    assert record["reference"].startswith(f"{small_onnx.name} (fp32, onnxruntime")


@pytest.mark.isa
def test_openvino_int8_is_verified_against_the_fp32_onnx_on_images_nncf_did_not_see(small_onnx, calib_dir, tmp_path,
                                                                                     monkeypatch):
    pytest.importorskip("nncf", reason="needs the openvino extra")
    _no_ecssd(monkeypatch, tmp_path)
    out = tmp_path / "q.xml"
    result = CliRunner().invoke(app, ["openvino", str(small_onnx), "--int8", "--calib", str(calib_dir), "--num", "4",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(Path(f"{out}.json").read_text())["verification"]
    assert record["passed"] is True and record["bound"]["mean_abs"] == 0.01 and record["mean_abs"] <= 0.01
    drawn = {p.name for p in sample_images(calib_dir, 4, seed=0)}
    assert record["images"]["source"] == "calib-not-drawn" and not drawn & set(record["images"]["files"])
