"""Real TensorRT on a real GPU: build, verify, load, run, compare with ONNX Runtime. Skipped without them.

These are the only tests that exercise TensorRT's behaviour (not just its names): the strongly typed
FP16 and Q/DQ builds, the verification of every engine against its ONNX on real images before it is
written, the precision read from an engine's own layers, the device in worker threads. They need
``pip install -e '.[gpu]'`` and a CUDA GPU, and run in a few minutes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from u2deploy.engines.trt_compat import probe_environment
from u2deploy.engines.trt_manifest import manifest_path, read_manifest
from u2deploy.errors import U2Error
from u2deploy.export.trt_plan import BatchRange

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def env():
    try:
        return probe_environment(0, "these tests")
    except U2Error as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def onnx_small(env, tmp_path_factory) -> Path:
    from u2deploy.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "u2netp.onnx"
    result = export_onnx(variant="small", output=out, size=(320, 320), dynamic_batch=True)
    return Path(getattr(result, "path", result))


def _ort(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 320, 320)).astype(np.float32)


@pytest.mark.parametrize(("precision", "atol"), [("fp32", 2e-3), ("fp16", 3e-2)])
def test_build_run_and_match_onnx_runtime(env, onnx_small, tmp_path, precision, atol):
    from u2deploy.engines.tensorrt import TensorRTRunner
    from u2deploy.export.trt import build_trt_engine

    if precision == "fp16":
        pytest.importorskip("u2deploy.export.fp16", reason="FP16 engines are built from the FP16 ONNX stage")
    result = build_trt_engine(onnx=onnx_small, precision=precision, batch=BatchRange(1, 2, 4),
                              timing_cache=tmp_path / "timing.cache",
                              output=tmp_path / f"m_{precision}.engine")
    manifest = read_manifest(result.engine)
    assert manifest["tensorrt_version"] == env.trt.__version__
    assert manifest["gpu"]["compute_capability"] == env.gpu.cc
    assert manifest["strongly_typed"] == (env.version.family != "8.6")
    assert manifest["verification"]["passed"] is True and manifest["verification"]["bound"]["precision"] == precision
    assert (tmp_path / "timing.cache").stat().st_size > 0
    for graphs in (False, True):
        with TensorRTRunner.open(str(result.engine), cuda_graphs=graphs) as runner:
            assert runner.info.batch_range == (1, 4) and runner.info.input_size == (320, 320)
            for n in (1, 3):
                x = _batch(n)
                got = runner.saliency(x)
                np.testing.assert_allclose(got, _ort(onnx_small, x), atol=atol)
                np.testing.assert_array_equal(runner.saliency(x), got)  # a replay gives the same answer


def test_engine_from_another_release_is_refused(env, onnx_small, tmp_path):
    from u2deploy.engines.tensorrt import TensorRTRunner
    from u2deploy.export.trt import build_trt_engine

    result = build_trt_engine(onnx=onnx_small, precision="fp32", output=tmp_path / "m.engine")
    manifest = json.loads(manifest_path(result.engine).read_text())
    manifest["tensorrt_version"] = "8.5.3.1" if env.version.major != 8 else "10.0.1"
    manifest_path(result.engine).write_text(json.dumps(manifest))
    with pytest.raises(U2Error, match="built by TensorRT"):
        TensorRTRunner.open(str(result.engine))


def test_implicit_calibrator(env, onnx_small, tmp_path):
    if env.version.family == "11":
        pytest.skip("TensorRT 11 has no implicit calibration")
    from PIL import Image

    from u2deploy.engines.tensorrt import TensorRTRunner
    from u2deploy.export.trt import build_trt_engine

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    result = build_trt_engine(onnx=onnx_small, precision="int8", int8_mode="calibrator", calib_dir=calib,
                              calib_batch=4, batch=BatchRange(1, 1, 4), output=tmp_path / "m_int8.engine")
    assert (tmp_path / "m_int8.calib.cache").stat().st_size > 0
    with TensorRTRunner.open(str(result.engine)) as runner:
        out = runner.saliency(_batch(2))
    assert out.shape == (2, 1, 320, 320) and 0 <= out.min() and out.max() <= 1


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory) -> Path:
    """ECSSD training images (0001-0800) where ../shared has them, else generated ones: never the held-out ones."""
    from PIL import Image

    from u2deploy.data.samples import ecssd_root, generated_images

    folder = tmp_path_factory.mktemp("calib")
    root = ecssd_root()
    if root is not None:
        for i in range(1, 801, 10):
            (folder / f"{i:04d}.jpg").symlink_to(root / "images" / f"{i:04d}.jpg")
    else:
        for i, image in enumerate(generated_images(32, seed=5, size=(240, 320))):
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_engine_is_verified_and_knows_its_precision_without_a_manifest(env, onnx_small, calib_images,
                                                                             tmp_path, precision):
    """Strongly typed FP16 and Q/DQ builds on 10.x and 11.x meet their bound against the FP32 ONNX on real
    images; with the manifest gone, the engine's layers tell its precision (never "unknown")."""
    from u2deploy.engines.tensorrt import TensorRTRunner
    from u2deploy.export.trt import build_folder, build_trt_engine
    from u2deploy.validate.tolerances import tolerance_for

    engine = tmp_path / f"u2netp_{precision}.engine"
    extra = {"calib_dir": calib_images, "calib_images": 64, "int8_mode": "qdq"} if precision == "int8" else {}
    result = build_trt_engine(onnx=onnx_small, precision=precision, batch=BatchRange(1, 1, 2), output=engine,
                              **extra)
    manifest = read_manifest(result.engine)
    verification = manifest["verification"]
    assert verification["passed"] is True and verification["reference"].startswith("u2netp.onnx (fp32")
    assert verification["mean_abs"] <= tolerance_for(precision).mean_abs
    assert manifest["strongly_typed"] == (env.version.family != "8.6")
    assert not (onnx_small.parent / "u2netp_fp16.onnx").exists()  # intermediates in the build folder only
    if precision != "fp32":
        assert build_folder(engine).is_dir() and all(Path(p).parent == build_folder(engine)
                                                     for p in manifest["intermediates"]["files"])
    manifest_path(result.engine).unlink()
    with TensorRTRunner.open(str(result.engine)) as runner:
        assert runner.info.precision == precision


def test_verification_finds_an_engine_that_does_not_match_its_onnx(env, onnx_small, small_weights, tmp_path):
    """The comparator on a real engine: against an ONNX of other weights it fails its bound."""
    from u2deploy.export.onnx import export_onnx
    from u2deploy.export.trt import build_trt_engine
    from u2deploy.export.trt_verify import verify_engine
    from u2deploy.validate.verify import choose_verification_images

    other = export_onnx("small", small_weights, tmp_path / "other.onnx", size=(320, 320), dynamic_batch=True).path
    result = build_trt_engine(onnx=onnx_small, precision="fp16", batch=BatchRange(1, 1, 2),
                              output=tmp_path / "m.engine")
    verification = verify_engine(env, result.engine, read_manifest(result.engine), name="m.engine",
                                 reference=other, reference_kind="fp32", precision="fp16", size=(320, 320),
                                 images=choose_verification_images())
    assert verification.passed is False
    with pytest.raises(U2Error, match="breaks its bound, nothing written"):
        verification.raise_if_failed(result.engine)


def test_worker_threads_run_on_the_runners_device(env, onnx_small, tmp_path):
    """u2bench predict calls infer from worker threads: each makes the runner's GPU current first."""
    from u2deploy.engines.tensorrt import TensorRTRunner
    from u2deploy.engines.trt_compat import import_cudart
    from u2deploy.export.trt import build_trt_engine

    count = import_cudart().cudaGetDeviceCount()[1]
    devices = [0, 1] if count > 1 else [0]
    for device in devices:
        result = build_trt_engine(onnx=onnx_small, precision="fp16", batch=BatchRange(1, 1, 2), device=device,
                                  output=tmp_path / f"m{device}.engine")
        x = _batch(2)
        with TensorRTRunner.open(str(result.engine), device=f"cuda:{device}") as runner:
            expected = runner.saliency(x)
            got: dict[str, np.ndarray] = {}
            worker = threading.Thread(target=lambda r=runner, b=x, out=got: out.update(d0=r.saliency(b)))
            worker.start()
            worker.join()
            np.testing.assert_array_equal(got["d0"], expected)
