"""Real TensorRT on a real GPU: build, load, run, compare with ONNX Runtime. Skipped without them.

These are the only tests that exercise TensorRT's behaviour (not just its names); they need
``pip install tensorrt cuda-python`` and a CUDA GPU, and run in a minute or two.
"""

from __future__ import annotations

import json
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
    result = export_onnx(variant="small", output=out, dynamic_batch=True)
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
