"""`u2export web`: the site's masks, in headless Chromium through `removeBackground`, equal `u2bench predict`'s.

The JavaScript port of the `fast` processing (Pillow's resize, the table normalisation, the map back to
the image's size) is checked against the Python code on fixed inputs, bit for bit, and the browser's
decoding against Pillow's; the page's own flow (choose a file, get a cut-out, download it) and its bad-input
messages run in the page. The site is served on 127.0.0.1 by the test and stopped by it. Needs Chromium,
Playwright and onnxruntime-web (tools/install_web_test_deps.sh); each test skips with the reason where
they are absent, the ECSSD comparisons where ../shared is.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import ECSSD, REPO, needs_ecssd
from u2deploy.cli.bench import app as bench_app
from u2deploy.cli.export import app as export_app
from u2deploy.data import postprocess, preprocess
from u2deploy.data.images import read_image
from u2deploy.data.samples import generated_images, held_out_ecssd, spread
from u2deploy.errors import U2Error
from u2deploy.export.web import browser, export_web
from u2deploy.export.web.resize_order import pillow_resize_order
from u2deploy.export.web.serve import serving
from u2deploy.export.web.webgpu import floor_pools

ORT_WEB = Path(os.environ.get("U2DEPLOY_ORT_WEB") or REPO / ".web" / "node_modules" / "onnxruntime-web" / "dist")
_NO_RUNTIME = (None if (ORT_WEB / "ort.wasm.min.mjs").is_file()
               else f"onnxruntime-web not found at {ORT_WEB} (run tools/install_web_test_deps.sh)")
needs_runtime = pytest.mark.skipif(_NO_RUNTIME is not None, reason=str(_NO_RUNTIME))
_NO_BROWSER = browser.missing() or _NO_RUNTIME
needs_browser = pytest.mark.skipif(_NO_BROWSER is not None, reason=f"headless Chromium: {_NO_BROWSER}")
N_HELD_OUT = 24


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def fp32_site(small_onnx, tmp_path_factory) -> Path:
    if _NO_RUNTIME:
        pytest.skip(_NO_RUNTIME)
    return export_web(small_onnx, tmp_path_factory.mktemp("web") / "fp32", ort_web=ORT_WEB).path


@pytest.fixture(scope="module")
def int8_onnx(small_onnx, calib_dir, tmp_path_factory) -> Path:
    """The 64×64 demo artifact quantized for the CPU, calibrated on ECSSD 0001-0016 (never the held-out images),
    or on generated images where ECSSD is absent."""
    from u2deploy.calibration.quantize import quantize_model

    calib = calib_dir
    if (ECSSD / "images").is_dir():
        calib = tmp_path_factory.mktemp("calib")
        for i in range(1, 17):
            (calib / f"{i:04d}.jpg").symlink_to(ECSSD / "images" / f"{i:04d}.jpg")
    out = tmp_path_factory.mktemp("int8")  # its own ranges cache: other tests calibrate small_onnx on other images
    return quantize_model(small_onnx, calib, out / "small64_int8.onnx", target="cpu", num=16,
                          cache=out / "small64.calib.json", progress=False).path


@pytest.fixture(scope="module")
def chromium():
    if _NO_BROWSER:
        pytest.skip(_NO_BROWSER)
    with browser.chromium() as chrome:
        yield chrome


@pytest.fixture(scope="module")
def fp32_page(fp32_site, chromium):
    with serving(fp32_site) as url:
        page = browser.open_page(chromium, url + "u2deploy.json")
        yield page
        page.close()


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _array(text: str, dtype, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype).reshape(shape)


def _rgba(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """H×W×4 canvas pixels of an H×W×C image (C = 1: gray copied to R, G, B), with a random alpha the code must skip."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    alpha = np.random.default_rng(seed).integers(0, 256, image.shape[:2], dtype=np.uint8)
    return np.dstack([rgb, alpha])


_RESIZE_U8 = """async ([b64, w, h, channels, ow, oh, order]) => {
  const p = await import('./pillow.mjs'); const m = await import('./u2deploy.mjs');
  return m.internals.toBase64(p.resizeUint8(m.internals.fromBase64(b64), w, h, 4, channels, ow, oh, order));
}"""
_RESIZE_F32 = """async ([b64, w, h, ow, oh, order]) => {
  const p = await import('./pillow.mjs'); const m = await import('./u2deploy.mjs');
  return m.internals.toBase64(p.resizeFloat32(m.internals.fromBase64(b64, Float32Array), w, h, ow, oh, order));
}"""
_PRE = """async ([b64, w, h, gray, size, mean, std, order]) => {
  const m = await import('./u2deploy.mjs');
  const x = m.internals.preprocess(m.internals.fromBase64(b64), w, h, gray, size, mean, std, order);
  return m.internals.toBase64(x);
}"""
_POST = """async ([b64, h, w, oh, ow, order]) => {
  const m = await import('./u2deploy.mjs');
  const mask = m.internals.postprocess(m.internals.fromBase64(b64, Float32Array), h, w, oh, ow, order);
  return m.internals.toBase64(new Uint8Array(mask.buffer));
}"""
_DECODE = """async ([b64, name]) => {
  const m = await import('./u2deploy.mjs');
  const img = await m.internals.decode(new File([m.internals.fromBase64(b64)], name));
  return { w: img.width, h: img.height, gray: img.gray, rgba: m.internals.toBase64(new Uint8Array(img.rgba.buffer)) };
}"""
_REMOVE = """async ([b64, name]) => {
  const m = await import('./u2deploy.mjs');
  const r = await m.removeBackground(new File([m.internals.fromBase64(b64)], name));
  return { w: r.width, h: r.height, backend: r.backend, mask: m.internals.toBase64(new Uint8Array(r.mask.buffer)) };
}"""


# ------------------------------------------------------------------- the JS processing against Python's

# (in H×W, out H×W): down, up, one axis only, identity, a 1-pixel source, and three whose height shrinks by
# more than twice the width's pixels (Pillow 13 runs the vertical pass first: ORDER).
RESIZES = [((300, 400), (64, 64)), ((37, 53), (160, 160)), ((200, 123), (200, 64)), ((123, 200), (64, 200)),
           ((64, 64), (64, 64)), ((1, 1), (64, 64)), ((1000, 7), (13, 320)), ((400, 300), (64, 290)),
           ((1920, 1080), (320, 320))]
ORDER = pillow_resize_order()


@needs_browser
@pytest.mark.parametrize(("src", "dst"), RESIZES, ids=lambda s: "x".join(map(str, s)))
def test_js_resize_is_pillows_bit_for_bit(fp32_page, src, dst) -> None:
    rng = np.random.default_rng(sum(src) + sum(dst))
    rgb = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    for image in (rgb, rgb[:, :, :1].copy()):
        channels = image.shape[2]
        got = fp32_page.evaluate(_RESIZE_U8, [_b64(_rgba(image)), src[1], src[0], channels, dst[1], dst[0], ORDER])
        expected = preprocess.resize_uint8(image, dst)
        np.testing.assert_array_equal(_array(got, np.uint8, (*dst, channels)), expected)
    plane = (rng.standard_normal(src) * 100).astype(np.float32)
    got = fp32_page.evaluate(_RESIZE_F32, [_b64(plane), src[1], src[0], dst[1], dst[0], ORDER])
    np.testing.assert_array_equal(_array(got, np.float32, dst), preprocess.resize_float(plane, dst))


@needs_browser
def test_js_preprocessing_is_pythons_bit_for_bit(fp32_page) -> None:
    mean, std = (0.5, 0.41, 0.3), (0.2, 0.25, 0.3)  # not ImageNet's: the JS takes them from the spec
    dark = (generated_images(1, seed=3, size=(90, 70))[0] // 4).astype(np.uint8)  # maximum below 255
    cases = [generated_images(1, seed=1, size=(240, 180))[0], dark, np.zeros((50, 60, 3), np.uint8),
             generated_images(1, seed=2, size=(99, 301))[0][:, :, 1:2].copy()]
    for image, size in zip(cases, [(64, 64), (160, 96), (64, 64), (64, 64)]):
        gray = image.shape[2] == 1
        got = fp32_page.evaluate(_PRE, [_b64(_rgba(image)), image.shape[1], image.shape[0], gray, list(size),
                                        list(mean), list(std), ORDER])
        expected = preprocess.fast_one(image, size, mean, std)
        np.testing.assert_array_equal(_array(got, np.float32, (3, *size)), expected)


@needs_browser
def test_js_postprocessing_is_pythons_bit_for_bit(fp32_page) -> None:
    rng = np.random.default_rng(5)
    maps = [rng.random((64, 64), dtype=np.float32), (rng.standard_normal((64, 64)) * 3).astype(np.float32),
            np.full((64, 64), 0.25, np.float32)]  # a constant map: all zeros
    for pred, size in zip(maps, [(300, 400), (41, 640), (64, 64)]):
        got = fp32_page.evaluate(_POST, [_b64(pred), 64, 64, size[0], size[1], ORDER])
        np.testing.assert_array_equal(_array(got, np.uint8, size), postprocess.fast_one(pred, size))


def _encoded(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    if fmt == "P":
        pil, fmt = pil.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"
    pil.save(buffer, fmt, **options)
    return buffer.getvalue()


@needs_browser
def test_the_browser_decodes_what_pillow_decodes(fp32_page, tmp_path) -> None:
    """JPEG (decoded by Chromium's libjpeg-turbo and Pillow's: no difference measured), EXIF orientation applied
    as read_image applies it, one-channel files kept gray, lossless formats exact."""
    rgb = generated_images(1, seed=4, size=(123, 157))[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    files = {"photo.jpg": _encoded(rgb, "JPEG", quality=90), "rotated.jpg": _encoded(rgb, "JPEG", exif=exif),
             "gray.jpg": _encoded(rgb[:, :, :1], "JPEG"), "gray.png": _encoded(rgb[:, :, :1], "PNG"),
             "palette.png": _encoded(rgb, "P"), "rgb.png": _encoded(rgb, "PNG"), "rgb.bmp": _encoded(rgb, "BMP"),
             "lossless.webp": _encoded(rgb, "WEBP", lossless=True)}
    if ECSSD.is_dir():
        files["ecssd_0557_gray.jpg"] = (ECSSD / "images" / "0557.jpg").read_bytes()
        files["ecssd_0801.jpg"] = (ECSSD / "images" / "0801.jpg").read_bytes()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        expected = read_image(tmp_path / name)
        got = fp32_page.evaluate(_DECODE, [base64.b64encode(data).decode(), name])
        rgba = _array(got["rgba"], np.uint8, (got["h"], got["w"], 4))
        assert got["gray"] == (expected.shape[2] == 1), name
        decoded = rgba[:, :, :1] if got["gray"] else rgba[:, :, :3]
        assert decoded.shape == expected.shape, name
        np.testing.assert_array_equal(decoded, expected, err_msg=name)


# -------------------------------------------------------------- masks: the browser against u2bench predict

@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """24 held-out ECSSD images (spread over 0801-1000), in a folder of their own for u2bench predict."""
    paths = held_out_ecssd()
    if len(paths) < N_HELD_OUT:
        pytest.skip(f"ECSSD not found at {ECSSD}")
    folder = tmp_path_factory.mktemp("held_out")
    for path in spread(paths, N_HELD_OUT):
        (folder / path.name).symlink_to(path)
    return folder


def _predict(model: Path, images: Path, out: Path) -> dict[str, np.ndarray]:
    result = CliRunner().invoke(bench_app, ["predict", "--model", str(model), "--images", str(images), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))}


@needs_ecssd
@needs_browser
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_browser_masks_equal_u2bench_predicts(precision, small_onnx, int8_onnx, held_out, chromium,
                                              tmp_path) -> None:
    model = small_onnx if precision == "fp32" else int8_onnx
    expected = _predict(model, held_out, tmp_path / "masks")
    site = export_web(model, tmp_path / "site", ort_web=ORT_WEB).path
    means, worst, identical = [], 0, 0
    with serving(site) as url:
        page = browser.open_page(chromium, url + "u2deploy.json")
        for path in sorted(held_out.iterdir()):
            got = page.evaluate(_REMOVE, [base64.b64encode(path.read_bytes()).decode(), path.name])
            mask = _array(got["mask"], np.uint8, (got["h"], got["w"]))
            want = expected[path.stem]
            assert got["backend"] == "wasm" and mask.shape == want.shape, path.name
            delta = np.abs(mask.astype(int) - want.astype(int))
            means.append(delta.mean())
            identical += int(delta.max() == 0)
            worst = max(worst, int(delta.max()))
            assert delta.mean() <= 1.0, f"{path.name}: mean|Δ| {delta.mean():.3f} gray levels"
        assert not page.errors, page.errors
    assert len(means) == N_HELD_OUT
    print(f"{precision}: {identical}/{len(means)} masks identical; per image mean|Δ| ≤ {max(means):.4f}, "
          f"max|Δ| ≤ {worst} gray levels")


@needs_browser
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_browser_runner_computes_onnxruntimes_map(precision, small_onnx, int8_onnx, tmp_path) -> None:
    """The format table's runner: the site's model on the tensor ONNX Runtime gets (WASM's own arithmetic)."""
    from u2deploy.engines import open_runner

    model = small_onnx if precision == "fp32" else int8_onnx
    site = export_web(model, tmp_path / "site", ort_web=ORT_WEB).path
    x = preprocess.fast(generated_images(2, seed=9), (64, 64))
    with open_runner(str(site), threads=2) as web, open_runner(str(model), threads=1) as native:
        assert web.info.backend == "browser" and web.info.spec == native.info.spec
        assert web.settings()["threads"] == 2
        got, want = web.saliency(x), native.saliency(x)
    assert got.shape == want.shape == (2, 1, 64, 64)
    assert np.abs(got - want).max() <= 1e-4


# ----------------------------------------------------------------------------------------- the page

def _wait_ready(page) -> None:
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Ready')")


@needs_browser
@pytest.mark.slow
def test_the_page_chooses_a_file_and_gives_a_cut_out(fp32_site, small_onnx, chromium, tmp_path) -> None:
    from u2deploy.engines import open_runner

    image = generated_images(1, seed=6, size=(180, 240))[0]
    photo = tmp_path / "photo.png"
    Image.fromarray(image).save(photo)
    with serving(fp32_site) as url:
        page = browser.open_page(chromium, url)
        _wait_ready(page)
        assert page.evaluate("crossOriginIsolated")  # the server's COOP/COEP headers: threaded WASM
        page.set_input_files("#files", str(photo))
        page.wait_for_selector("section.result[data-state=done]")
        assert page.eval_on_selector("section.result canvas", "c => [c.width, c.height]") == [240, 180]
        assert "wasm" in page.inner_text("section.result .meta")
        with page.expect_download() as download:
            page.click("section.result a[download]")
        assert download.value.suggested_filename == "photo.png"
        download.value.save_as(tmp_path / "cutout.png")
        assert not page.errors, page.errors
    cut = np.asarray(Image.open(tmp_path / "cutout.png"))
    with open_runner(str(small_onnx)) as runner:
        mask = postprocess.fast_one(runner.saliency(preprocess.fast([image], (64, 64)))[0], image.shape[:2])
    assert cut.shape == (180, 240, 4)
    np.testing.assert_array_equal(cut[:, :, :3], image)  # the PNG keeps the colours under the alpha
    assert np.abs(cut[:, :, 3].astype(int) - mask.astype(int)).max() <= 1


@needs_browser
@pytest.mark.slow
def test_bad_inputs_get_a_clear_message_and_the_page_goes_on(fp32_site, chromium, tmp_path) -> None:
    huge = io.BytesIO()
    Image.new("L", (10_000, 8_000)).save(huge, "PNG")  # 80 megapixels in ~80 kB: refused from its header
    tiny = _encoded(np.zeros((1, 1, 3), np.uint8), "PNG")
    good = _encoded(generated_images(1, seed=8, size=(64, 80))[0], "JPEG")
    files = [("notes.jpg", b"these are not the pixels you are looking for\n"), ("empty.png", b""),
             ("tiny.png", tiny), ("huge.png", huge.getvalue()), ("good.jpg", good)]
    with serving(fp32_site) as url:
        page = browser.open_page(chromium, url)
        _wait_ready(page)
        page.set_input_files("#files", [{"name": n, "mimeType": "image/jpeg", "buffer": b} for n, b in files])
        page.wait_for_selector("section.result[data-state=done]")
        errors = page.eval_on_selector_all("section.result[data-state=error] .error",
                                           "els => els.map(e => e.textContent)")
        assert not page.errors, page.errors
    assert sorted(errors) == sorted([
        "notes.jpg: not a readable image (the browser cannot decode it)",
        "empty.png: empty file",
        "tiny.png: 1×1 pixels is too small (each side at least 8)",
        "huge.png: 10000×8000 pixels is over the 64,000,000 limit (a decompression bomb?)",
    ])


# ------------------------------------------------------------------------------------- the export itself

@needs_runtime
def test_export_writes_a_site_that_reads_its_spec_from_json(small_onnx, tmp_path) -> None:
    out = tmp_path / "site"
    result = CliRunner().invoke(export_app, ["web", str(small_onnx), "-o", str(out), "--ort-web", str(ORT_WEB)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "fp32 at 64×64 on wasm" in result.output
    description = json.loads((out / "u2deploy.json").read_text())
    assert description["spec"]["input_size"] == [64, 64] and description["spec"]["mean"] == [0.485, 0.456, 0.406]
    assert description["model"] == {"file": small_onnx.name, "input": "input", "output": "saliency",
                                    "free_dimensions": {"batch": 1}}
    for name in ("index.html", "u2deploy.mjs", "processing.mjs", "pillow.mjs", small_onnx.name,
                 "ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.wasm", "_headers"):
        assert (out / name).is_file(), name
    scripts = "".join((out / n).read_text() for n in ("u2deploy.mjs", "processing.mjs", "app.mjs"))
    assert not re.search(r"\b(0\.485|0\.229|320|160)\b", scripts)  # mean, std and size: all from u2deploy.json
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging folder left behind


@needs_runtime
def test_export_refuses_what_it_cannot_do_in_one_line(small_onnx, tmp_path) -> None:
    def run(*args: str) -> str:
        result = CliRunner().invoke(export_app, ["web", *args, "--ort-web", str(ORT_WEB)])
        assert result.exit_code == 1 and isinstance(result.exception, U2Error), result.output
        return str(result.exception)

    site = tmp_path / "site"
    export_web(small_onnx, site, ort_web=ORT_WEB)
    before = sorted(p.name for p in site.iterdir())
    assert "a site is already there; pass --overwrite" in run(str(small_onnx), "-o", str(site))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "not a site u2export web wrote" in run(str(small_onnx), "-o", str(mine), "--overwrite")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert "takes an ONNX artifact" in run(str(tmp_path / "model.xml"), "-o", str(tmp_path / "x"))
    assert "not an onnxruntime-web dist folder" in str(_raises(lambda: export_web(
        small_onnx, tmp_path / "y", ort_web=tmp_path)))
    tensorrt = onnx.load(str(small_onnx))
    for prop in tensorrt.metadata_props:
        if prop.key == "precision":
            prop.value = "int8"
    tensorrt.metadata_props.add(key="quant_target", value="tensorrt")
    onnx.save(tensorrt, str(tmp_path / "trt_qdq.onnx"))
    assert "quantize for the browser with u2export quantize --target cpu" in run(
        str(tmp_path / "trt_qdq.onnx"), "-o", str(tmp_path / "z"))
    replaced = export_web(small_onnx, site, ort_web=ORT_WEB, overwrite=True)
    assert replaced.replaced and sorted(p.name for p in site.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "site", "trt_qdq.onnx"]


def _raises(call) -> U2Error:
    with pytest.raises(U2Error) as info:
        call()
    return info.value


@needs_runtime
def test_the_local_server_sends_the_isolation_headers_and_stops(fp32_site, tmp_path) -> None:
    import urllib.error
    import urllib.request

    with serving(fp32_site) as url:
        with urllib.request.urlopen(url + "u2deploy.mjs", timeout=10) as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert response.headers["Content-Type"].startswith("text/javascript")
        with urllib.request.urlopen(url + "ort/ort-wasm-simd-threaded.wasm", timeout=10) as response:
            assert response.headers["Content-Type"] == "application/wasm"
    assert url.startswith("http://127.0.0.1:")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
    with pytest.raises(U2Error, match="not a site"):
        with serving(tmp_path):
            pass


# ---------------------------------------------------------------------------------------------- WebGPU

def _pool_model(side: int) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_webgpu_floor_pools_only_where_exact(small_onnx) -> None:
    model = onnx.load(str(small_onnx))
    rewritten, changed = floor_pools(model, (64, 64), "m.onnx")
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert changed == len(pools) > 0
    assert all(a.i == 0 for n in rewritten.graph.node if n.op_type == "MaxPool" for a in n.attribute
               if a.name == "ceil_mode")
    from u2deploy.export.web.webgpu import check_same

    assert check_same(model, rewritten, (64, 64), "m.onnx") == 0.0
    with pytest.raises(U2Error, match="MaxPool pool pools a 5×5 map with ceil_mode=1"):
        floor_pools(_pool_model(5), (5, 5), "m.onnx")
    assert floor_pools(_pool_model(4), (4, 4), "m.onnx")[1] == 1


@needs_browser
@pytest.mark.skipif(os.environ.get("U2DEPLOY_TEST_WEBGPU") != "1",
                    reason="WebGPU here is SwiftShader (about a minute per 64×64 image); set U2DEPLOY_TEST_WEBGPU=1")
def test_webgpu_runs_the_floor_pool_model(small_onnx, tmp_path) -> None:
    from u2deploy.engines import open_runner

    site = export_web(small_onnx, tmp_path / "site", ort_web=ORT_WEB, webgpu=True).path
    x = preprocess.fast(generated_images(1, seed=9), (64, 64))
    with open_runner(str(site), device="webgpu") as web, open_runner(str(small_onnx)) as native:
        assert np.abs(web.saliency(x) - native.saliency(x)).max() <= 1e-4
