"""A real Triton server (the tritonserver 2.51 that nvidia-pytriton bundles) serving `u2export triton`'s ensemble.

The repository is written with ``--preprocess-in-server --model-backend python`` (the bundled server
has the python backend only); the server's Python environment is made by the documented step,
``u2export triton-env DIR`` (pip fetches numpy<2: the test skips where it cannot); the server runs on
127.0.0.1, started by the test, bounded in time, and stopped by its PID. Masks over HTTP and gRPC must
equal ``u2bench predict``'s within one gray level on held-out ECSSD images (generated images where
../shared is absent).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("tritonclient.http", reason="needs the triton extra: pip install -e '.[triton]'")
pytest.importorskip("tritonclient.grpc", reason="needs the triton extra: pip install -e '.[triton]'")

from u2deploy.errors import U2Error  # noqa: E402
from u2deploy.export.triton.server import LocalTriton  # noqa: E402

_WHY = LocalTriton.unavailable_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_WHY is not None, reason=f"no local Triton server: {_WHY}")]
N_IMAGES = 4


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    from u2deploy.data.samples import ECSSD_HELD_OUT, ecssd_root, generated_images

    root = ecssd_root()
    if root is not None:
        found = [root / "images" / f"{i:04d}.jpg" for i in ECSSD_HELD_OUT]
        found = [p for p in found if p.is_file()]
        if len(found) >= N_IMAGES:
            return found[::len(found) // N_IMAGES][:N_IMAGES]
    folder = tmp_path_factory.mktemp("images")
    sizes = [(300, 400), (257, 191), (120, 333), (64, 64)]
    paths = []
    for i, size in enumerate(sizes[:N_IMAGES]):
        Image.fromarray(generated_images(1, seed=i, size=size)[0]).save(folder / f"gen{i}.png")
        paths.append(folder / f"gen{i}.png")
    return paths


@pytest.fixture(scope="module")
def server(small_onnx, tmp_path_factory):
    from u2deploy.cli.export import app as export_app

    repo = tmp_path_factory.mktemp("triton") / "repo"
    result = CliRunner().invoke(export_app, ["triton", str(small_onnx), "-o", str(repo), "--preprocess-in-server",
                                             "--model-backend", "python", "--threads", "1", "--queue-delay-us",
                                             "20000"])
    assert result.exit_code == 0, result.output
    made = CliRunner().invoke(export_app, ["triton-env", str(tmp_path_factory.mktemp("server-env") / "env")])
    if isinstance(made.exception, U2Error):  # pip could not fetch numpy<2 (an offline machine)
        pytest.skip(f"no Python environment for the server's python backend: {made.exception}")
    assert made.exit_code == 0, made.output
    python = Path(made.output.strip().split("the server's python: ", 1)[1])
    local = LocalTriton(repo, python=python, start_s=180, stop_s=20)
    started = time.monotonic()
    local.start()
    local.startup_s = time.monotonic() - started
    yield local
    pid = local.process.pid
    code = local.stop()
    assert code is not None and local.process.poll() is not None, local.log_tail()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


@pytest.fixture(scope="module")
def predicted(small_onnx, images, tmp_path_factory) -> dict[str, np.ndarray]:
    """``u2bench predict``'s masks for the same images, through its CLI."""
    from u2deploy.cli.bench import app as bench_app

    out = tmp_path_factory.mktemp("predict")
    args = ["predict", "--model", str(small_onnx), "-o", str(out)]
    for path in images:
        args += ["--images", str(path)]
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    return {p.stem: np.asarray(Image.open(out / f"{p.stem}.png")) for p in images}


def _request(module, data: list[bytes]):
    inp = module.InferInput("IMAGE", [len(data), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[d] for d in data], dtype=object))
    return [inp]


def _check(mask: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert mask.dtype == np.uint8 and mask.shape == expected.shape, (what, mask.shape, expected.shape)
    worst = int(np.abs(mask.astype(np.int16) - expected.astype(np.int16)).max())
    assert worst <= 1, f"{what}: max |Δ| {worst} gray levels vs u2bench predict"


def test_masks_over_http_equal_u2bench_predict(server, images, predicted):
    import tritonclient.http as http

    client = http.InferenceServerClient(server.http_url, connection_timeout=30, network_timeout=60)
    try:
        assert client.is_model_ready("u2netp")
        for path in images:
            mask = client.infer("u2netp", _request(http, [path.read_bytes()])).as_numpy("MASK")
            _check(mask[0], predicted[path.stem], f"HTTP {path.name}")
        # two images of one size in one request: a batch of two through the whole ensemble
        twice = client.infer("u2netp", _request(http, [images[0].read_bytes()] * 2)).as_numpy("MASK")
        assert twice.shape[0] == 2
        for mask in twice:
            _check(mask, predicted[images[0].stem], "HTTP batch of 2")
    finally:
        client.close()


def test_masks_over_grpc_equal_u2bench_predict(server, images, predicted):
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(server.grpc_url)
    try:
        for path in images:
            mask = client.infer("u2netp", _request(grpc, [path.read_bytes()]), client_timeout=60).as_numpy("MASK")
            _check(mask[0], predicted[path.stem], f"gRPC {path.name}")
    finally:
        client.close()


def test_the_dynamic_batcher_batches_concurrent_requests(server, images):
    """Eight requests at once: the network step runs them in fewer executions than requests."""
    import tritonclient.http as http

    data = images[0].read_bytes()
    client = http.InferenceServerClient(server.http_url, concurrency=8, network_timeout=120)
    try:
        def counts():
            stats = client.get_inference_statistics("u2netp_model")["model_stats"][0]
            return stats["inference_count"], stats["execution_count"]

        inferences, executions = counts()
        pending = [client.async_infer("u2netp", _request(http, [data])) for _ in range(8)]
        masks = [p.get_result(timeout=120).as_numpy("MASK") for p in pending]
        assert all(np.array_equal(m, masks[0]) for m in masks)
        after_inferences, after_executions = counts()
        assert after_inferences - inferences == 8
        assert after_executions - executions < 8, "no two requests were batched together"
    finally:
        client.close()


def test_a_bad_image_fails_its_request_only(server, images):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(server.http_url, network_timeout=60)
    try:
        with pytest.raises(InferenceServerException, match=r"IMAGE\[0\]: not a readable image"):
            client.infer("u2netp", _request(http, [b"this is not an image"]))
        assert client.infer("u2netp", _request(http, [images[0].read_bytes()])).as_numpy("MASK").ndim == 3
        assert client.is_server_live()
    finally:
        client.close()
