"""Shared fixtures: where ../shared is, and small artifacts built once per session."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ECSSD = SHARED / "datasets" / "ECSSD"
REFERENCE = SHARED / "reference"

needs_ecssd = pytest.mark.skipif(not (ECSSD / "images").is_dir(), reason=f"ECSSD not found at {ECSSD}")
# `nox -s avx2` sets this: ONNX Runtime and OpenVINO inference then runs on an emulated CPU (tests/emulated_cpu.py).
EMULATED_CPU = os.environ.get("U2DEPLOY_EMULATE_CPU")
needs_reference = pytest.mark.skipif(not (REFERENCE / "golden").is_dir(),
                                     reason=f"reference files not found at {REFERENCE}")


def held_out(n: int | None = None, lane_images: int = 6):
    """ECSSD 0801-1000, the held-out images of every accuracy number (``n`` of them, evenly spread); on an
    emulated CPU (~60× slower) at most ``lane_images``, so that the AVX2 lane stays within its time."""
    from u2deploy.data.datasets import open_dataset

    dataset = open_dataset(ECSSD, subset="0801-1000")
    keep = min(n or len(dataset.pairs), lane_images if EMULATED_CPU else len(dataset.pairs))
    step = max(1, len(dataset.pairs) // keep)
    return dataclasses.replace(dataset, pairs=dataset.pairs[::step][:keep])


@pytest.fixture(scope="session", autouse=True)
def _emulated_cpu():
    """Under `nox -s avx2`: every ONNX Runtime / OpenVINO inference on the emulated CPU, for the whole session."""
    if not EMULATED_CPU:
        yield None
        return
    from emulated_cpu import EmulatedCpu, patch_runners

    cpu = EmulatedCpu(EMULATED_CPU)
    saved = patch_runners(cpu)
    yield cpu
    for cls, infer in saved:
        cls.infer = infer
    cpu.close()


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo weights (trained: numerically well-conditioned) when the package has them.

    The fallback, random weights with BatchNorm statistics re-estimated on images, amplifies float32
    rounding through 119 convolutions to ~1e-4 at some sizes: PyTorch FP32 itself differs from
    PyTorch FP64 by 7e-5 there, so those weights cannot tell an exporter bug from noise.
    """
    import os

    from u2deploy.model.registry import default_weights

    override = os.environ.get("U2DEPLOY_TEST_WEIGHTS")
    if override:
        return Path(override)
    demo = default_weights("small")
    if demo is not None and demo.path is not None:
        return demo.path
    from u2deploy.data import preprocess
    from u2deploy.data.samples import verification_images
    from u2deploy.model.synthetic import random_calibrated, save_state_dict

    images, _ = verification_images(4)
    x = preprocess.fast(images, (64, 64))
    return save_state_dict(random_calibrated("small", [x], seed=1),
                           tmp_path_factory.mktemp("weights") / "small_random.pth")


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory, small_weights: Path) -> Path:
    """A 64×64, dynamic-batch ONNX export of ``small_weights``."""
    from u2deploy.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "small64.onnx"
    return export_onnx("small", small_weights, out, size=(64, 64), dynamic_batch=True, n_verify=4).path


@pytest.fixture(scope="session")
def random_small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """U²-Net† with random weights and re-estimated BatchNorm statistics, exported at 64×64."""
    from u2deploy.data import preprocess
    from u2deploy.data.samples import generated_images
    from u2deploy.export.onnx import export_onnx
    from u2deploy.model.synthetic import random_calibrated, save_state_dict

    folder = tmp_path_factory.mktemp("model")
    batches = [preprocess.fast(generated_images(4, seed=s, size=(64, 64)), (64, 64)) for s in range(2)]
    weights = save_state_dict(random_calibrated("small", batches), folder / "random_small.pth")
    return export_onnx("small", weights, folder / "small64.onnx", size=(64, 64), n_verify=2).path


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six generated images (80×96): a calibration folder that needs no dataset."""
    from PIL import Image

    from u2deploy.data.samples import generated_images

    folder = tmp_path_factory.mktemp("calib")
    for i, image in enumerate(generated_images(6, seed=7, size=(80, 96))):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo weights exported at their native size (160×160)."""
    from u2deploy.export.onnx import export_onnx

    return export_onnx("small", None, tmp_path_factory.mktemp("demo") / "demo.onnx", n_verify=2).path


@pytest.fixture(scope="session")
def ecssd_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Links to ECSSD 0001-0800 only: calibration never sees the held-out images."""
    if not (ECSSD / "images").is_dir():
        pytest.skip(f"ECSSD not found at {ECSSD}")
    folder = tmp_path_factory.mktemp("ecssd_calib")
    for i in range(1, 801):
        (folder / f"{i:04d}.jpg").symlink_to(ECSSD / "images" / f"{i:04d}.jpg")
    return folder


@pytest.fixture(scope="session")
def demo_int8_cpu(demo_onnx: Path, ecssd_calib: Path) -> Path:
    """The demo ONNX quantized for CPUs (``--target cpu``) on 300 of ECSSD 0001-0800; ranges cached beside it."""
    from u2deploy.calibration.quantize import quantize_model

    return quantize_model(demo_onnx, ecssd_calib, demo_onnx.with_name("demo_cpu.onnx"), target="cpu", num=300,
                          cache=demo_onnx.with_name("demo.calib.json"), progress=False).path


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)
