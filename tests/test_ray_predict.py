"""`u2bench predict --ray` on a real Ray cluster: three nodes (1 CPU each) on 127.0.0.1 of a private
network namespace (u2deploy.distributed.loopback), the CLI run as a user runs it.

One cluster serves every scenario (its start-up is most of the cost); the node kill comes last.
Every mask is compared byte for byte with local predict's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import ECSSD

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install -e '.[ray]')")

from u2deploy.distributed.loopback import namespace_prefix, run_steps_isolated  # noqa: E402
from u2deploy.files import atomic_path, remove_temporaries  # noqa: E402

PREFIX, WHY = namespace_prefix()
needs_netns = pytest.mark.skipif(PREFIX is None, reason=f"Ray tests run in a private network namespace: {WHY}")

BENCH = [sys.executable, "-m", "u2deploy.cli.bench"]
N_IMAGES = 24  # the flat folder; 4 more in sub/ for --recursive
TRIGGER = 5  # files on disk when the node is killed / Ctrl-C is sent


def _images(folder: Path) -> list[Path]:
    """Held-out ECSSD images where present (0801 …), generated ones otherwise; 4 of them in sub/."""
    from u2deploy.data.samples import generated_images

    (folder / "sub").mkdir(parents=True)
    names = [f"{801 + k:04d}.jpg" for k in range(N_IMAGES + 4)]
    if (ECSSD / "images" / names[-1]).is_file():
        paths = [shutil.copy(ECSSD / "images" / n, folder / n) for n in names]
    else:
        paths = []
        for name, image in zip(names, generated_images(len(names), size=(120, 160))):
            Image.fromarray(image).save(folder / name.replace(".jpg", ".png"))
            paths.append(folder / name.replace(".jpg", ".png"))
    for path in paths[N_IMAGES:]:
        shutil.move(path, folder / "sub" / Path(path).name)
    return sorted(folder.glob("*.*"))


def _predict(model: Path, images: Path, out: Path, *extra: str, ray: bool = True) -> list[str]:
    return [*BENCH, "predict", "--model", str(model), "--images", str(images), "-o", str(out), *extra,
            *(["--ray", "{address}"] if ray else [])]


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory: pytest.TempPathFactory, small_onnx: Path) -> dict[str, Any]:
    """Local predict's masks, then every Ray scenario on one three-node loopback cluster."""
    if PREFIX is None:
        pytest.skip(WHY)
    root = tmp_path_factory.mktemp("ray")
    images = root / "images"
    _images(images)
    bad = root / "bad"
    bad.mkdir()
    for path in sorted(images.glob("*.*"))[:8]:
        shutil.copy(path, bad / path.name)
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    ref = root / "ref"
    local = subprocess.run(_predict(small_onnx, images, ref, "--recursive", "--cutout", ray=False),
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    steps = [
        {"name": "same", "cmd": _predict(small_onnx, images, root / "same", "--recursive", "--cutout")},
        {"name": "bad", "cmd": _predict(small_onnx, bad, root / "bad_out")},
        {"name": "interrupted", "cmd": _predict(small_onnx, images, root / "resumed"),
         "when": {"folder": str(root / "resumed"), "files": TRIGGER, "interrupt": True}},
        {"name": "resumed", "cmd": _predict(small_onnx, images, root / "resumed", "--skip-existing")},
        {"name": "killed", "cmd": _predict(small_onnx, images, root / "killed"),
         "when": {"folder": str(root / "killed"), "files": TRIGGER, "kill_node": 2}},
    ]
    for step in steps:
        step["timeout_s"] = 300
    results = run_steps_isolated(steps, cpus=[1, 1, 1], workdir=root, timeout_s=1200)
    return {"root": root, "ref": ref, "steps": {s["name"]: s for s in results["steps"]}}


def _same_masks(out: Path, ref: Path, names: list[str] | None = None) -> list[str]:
    """The mask files in ``out`` (no temporaries anywhere), each byte for byte local predict's."""
    assert not [p for p in out.rglob(".*") if p.is_file()], "a temporary file was left behind"
    names = names or sorted(p.name for p in out.glob("*.png"))
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    return names


@needs_netns
def test_masks_and_cutouts_are_byte_identical_to_local_predict(cluster_runs: dict[str, Any]) -> None:
    step, ref = cluster_runs["steps"]["same"], cluster_runs["ref"]
    out = cluster_runs["root"] / "same"
    assert step["rc"] == 0, step["stderr"]
    assert "Traceback" not in step["stderr"] and "u2bench: Ray: 3 nodes, 3 CPUs" in step["stderr"]
    assert f"wrote {N_IMAGES + 4} masks and {N_IMAGES + 4} cut-outs to {out}" in step["stdout"]
    assert len(_same_masks(out, ref)) == N_IMAGES
    assert len(_same_masks(out / "sub", ref / "sub")) == 4
    for folder in (out / "cutouts", out / "cutouts" / "sub"):
        _same_masks(folder, ref / folder.relative_to(out))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(p.relative_to(ref) for p in ref.rglob("*"))


@needs_netns
def test_a_corrupt_image_is_named_and_every_other_is_written(cluster_runs: dict[str, Any]) -> None:
    step = cluster_runs["steps"]["bad"]
    assert step["rc"] == 1
    lines = [line for line in step["stderr"].splitlines() if "broken.jpg" in line]
    assert len(lines) == 1 and "broken.jpg: corrupt or truncated image" in lines[0], step["stderr"]
    assert "Traceback" not in step["stderr"]
    assert "wrote 8 masks" in step["stdout"] and "1 image failed" in step["stdout"]
    assert len(_same_masks(cluster_runs["root"] / "bad_out", cluster_runs["ref"])) == 8


@needs_netns
def test_ctrl_c_exits_130_and_skip_existing_finishes_the_job(cluster_runs: dict[str, Any]) -> None:
    stopped, resumed = cluster_runs["steps"]["interrupted"], cluster_runs["steps"]["resumed"]
    assert stopped["fired"], "the job ended before Ctrl-C could be sent"
    assert stopped["rc"] == 130, stopped["stderr"]
    kept = re.search(r"interrupted: (\d+) masks? written to .* and kept", stopped["stderr"])
    assert kept and int(kept.group(1)) >= TRIGGER - 1, stopped["stderr"]
    assert resumed["rc"] == 0, resumed["stderr"]
    skipped = re.search(r"(\d+) images? skipped \(outputs already there\)", resumed["stdout"])
    written = re.search(r"wrote (\d+) masks?", resumed["stdout"])
    assert skipped and written and int(skipped.group(1)) >= int(kept.group(1)), resumed["stdout"]
    assert int(skipped.group(1)) + int(written.group(1)) == N_IMAGES
    assert len(_same_masks(cluster_runs["root"] / "resumed", cluster_runs["ref"])) == N_IMAGES


@needs_netns
def test_a_worker_node_killed_mid_job_loses_nothing(cluster_runs: dict[str, Any]) -> None:
    step = cluster_runs["steps"]["killed"]
    assert step["fired"] and step["fired"]["at_files"] < N_IMAGES, "the node was not killed mid-job"
    assert step["cpu_s_nodes"][2] > 1, "the killed node had no part in the job"
    assert step["rc"] == 0, step["stderr"]
    assert f"wrote {N_IMAGES} masks" in step["stdout"]
    assert len(_same_masks(cluster_runs["root"] / "killed", cluster_runs["ref"])) == N_IMAGES


# ------------------------------------------------------------------------------ without a cluster
def test_the_output_plan_is_checked_before_ray_is_reached(tmp_path: Path, small_onnx: Path, monkeypatch) -> None:
    from u2deploy.cli.bench import app
    from u2deploy.distributed import predict as ray_predict

    monkeypatch.setattr(ray_predict, "connect", lambda address: pytest.fail("connected before the plan passed"))

    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(images / "a.png")
    # -o the input folder: a.png would overwrite its own input; refused before any connection is tried
    result = CliRunner().invoke(app, ["predict", "--model", str(small_onnx), "--images", str(images), "-o",
                                      str(images), "--ray", "127.0.0.1:9"])
    assert result.exit_code == 1
    assert "refusing to overwrite an input" in str(result.exception)


@pytest.mark.parametrize(("flags", "message"), [
    (["--ray-actors", "2"], "go with --ray"),
    (["--ray", "local", "--threads", "2"], "--ray-cpus-per-actor"),
])
def test_ray_flags_are_checked(tmp_path: Path, small_onnx: Path, flags: list[str], message: str) -> None:
    from u2deploy.cli.bench import app

    result = CliRunner().invoke(app, ["predict", "--model", str(small_onnx), "--images", str(tmp_path), "-o",
                                      str(tmp_path / "out"), *flags])
    assert result.exit_code == 1 and message in str(result.exception)


def test_remove_temporaries_takes_atomic_paths_leftovers_and_nothing_else(tmp_path: Path) -> None:
    final = tmp_path / "0801.png"
    with atomic_path(final) as tmp:
        leftover = tmp_path / tmp.name  # what a worker killed here leaves behind
    leftover.write_bytes(b"half a PNG")
    keep = [tmp_path / ".0801.png.tmp", tmp_path / ".0802.png.abcdefgh.tmp", tmp_path / "0801.png.abcdefgh.tmp"]
    for path in keep:
        path.write_bytes(b"the user's")
    assert remove_temporaries([final]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, *(p.name for p in keep)])
