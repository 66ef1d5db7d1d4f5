"""The browser against native ONNX Runtime, same artifact, same CPU, one interleaved run.

    python tools/web_speed.py --model u2netp320.onnx --model u2netp320_int8.onnx [--ort-web DIR] \\
        [--images ECSSD/images] [--min-time-s 20] [--json web_speed.json]

For each artifact: ``u2export web`` writes its site into a temporary folder, served on 127.0.0.1 with the
COOP/COEP headers (threaded WASM) and opened in headless Chromium (Debian's, through Playwright).

- First load, in a fresh browser context: the bytes the page downloads until it is ready (the page, the
  module, onnxruntime-web and the model, from the Resource Timing entries), the session creation time,
  and the time from navigation to ready.
- Warm, every artifact's four steps in one run of rounds (``u2deploy.bench.paired.interleave``, the order
  reversed every other round): native model only (``runner.bind``), native end to end (decode, ``fast``
  preprocessing, model, postprocessing: ``u2bench latency``'s end-to-end step), the browser's model
  only (``session.run`` on a tensor staged in the page), and ``removeBackground`` end to end on a File
  (decode in the browser, the JS processing, the model, the mask). Ratios are medians of per-round
  ratios, also each artifact's model time over the first artifact's (INT8 ÷ FP32), natively and in the
  browser.
- A 1080p photo (an ECSSD image upscaled to 1920×1080 with Pillow's bicubic filter, saved as JPEG 92),
  end to end in the browser (with its breakdown) and natively.

The browser uses every core (``navigator.hardwareConcurrency`` WASM threads), native ONNX Runtime the
same number of intra-op threads. Prints a Markdown table with the CPU and its load average.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from u2deploy import hardware
from u2deploy.bench.paired import interleave
from u2deploy.bench.timing import Step, end_to_end_step, model_step
from u2deploy.data import postprocess, preprocess
from u2deploy.data.images import list_images, read_image
from u2deploy.data.samples import held_out_ecssd, spread
from u2deploy.engines import open_runner
from u2deploy.export.web import export_web, find_runtime
from u2deploy.export.web.browser import chromium, open_page
from u2deploy.export.web.serve import serving
from u2deploy.files import write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ORT_WEB = ROOT / ".web" / "node_modules" / "onnxruntime-web" / "dist"

_FIRST_LOAD = """() => {
  const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
  return { bytes: entries.reduce((n, e) => n + (e.encodedBodySize || 0), 0), files: entries.length,
           readyMs: performance.now(), status: document.getElementById('status').textContent };
}"""
_STAGE = """async ([names, blobs]) => {
  const m = await import('./u2deploy.mjs');
  window.files = names.map((n, i) => new File([m.internals.fromBase64(blobs[i])], n));
  window.next = 0;
  const s = await m.site();
  const [h, w] = s.spec.input_size;
  window.tensor = new Float32Array(3 * h * w).fill(0.25);
  window.dims = [1, 3, h, w];
  const run = await m.load();
  return { threads: run.threads, sessionMs: run.sessionMs };
}"""
_E2E = """async () => {
  const m = await import('./u2deploy.mjs');
  const r = await m.removeBackground(window.files[window.next++ % window.files.length]);
  return r.timings;
}"""
_MODEL = """async () => {
  const m = await import('./u2deploy.mjs');
  await m.internals.infer(window.tensor, window.dims);
}"""
_PHOTO = """async ([b64, n]) => {
  const m = await import('./u2deploy.mjs');
  const file = new File([m.internals.fromBase64(b64)], 'photo_1080p.jpg');
  await m.removeBackground(file);
  const runs = [];
  for (let i = 0; i < n; i++) { const r = await m.removeBackground(file); runs.push({ ms: r.ms, ...r.timings }); }
  return runs;
}"""


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def photo_1080p(source: Path, out: Path) -> Path:
    """An ECSSD image upscaled to 1920×1080 (bicubic), as a JPEG: a stand-in for a 1080p photo."""
    Image.open(source).convert("RGB").resize((1920, 1080), Image.BICUBIC).save(out, "JPEG", quality=92)
    return out


def first_load(browser: Any, url: str) -> tuple[dict[str, Any], Any]:
    """A fresh context opens the page and waits until it is ready; what it downloaded, and the page."""
    context = browser.new_context()
    page = open_page(context, url, timeout_s=300)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Ready')", timeout=300_000)
    return page.evaluate(_FIRST_LOAD), page


class Contender:
    """One artifact: its site open in a page, its native runner, and its four timed steps."""

    def __init__(self, model: Path, ort_web: Path, images: list[Path], workdir: Path, browser: Any,
                 stack: contextlib.ExitStack) -> None:
        self.model = model
        self.site = export_web(model, workdir / f"{model.stem}_site", ort_web=ort_web).path
        url = stack.enter_context(serving(self.site))
        self.runner = stack.enter_context(open_runner(str(model), threads=hardware.usable_cpus()))
        self.loaded, self.page = first_load(browser, url)
        stack.callback(self.page.context.close)
        self.staged = self.page.evaluate(_STAGE, [[p.name for p in images], [_b64(p) for p in images]])
        self.size = self.runner.info.size_for(None)
        spec = self.runner.info.spec
        x = preprocess.fast([read_image(images[0])], self.size, spec.mean, spec.std)
        self.stages: dict[str, list[float]] = {}
        self.steps = [model_step(self.runner, x), end_to_end_step(self.runner, 1, self.size, workdir / "images"),
                      Step(lambda: self.page.evaluate(_MODEL), "browser model"),
                      Step(self._browser_e2e, "removeBackground end to end")]

    def _browser_e2e(self) -> None:
        for name, ms in self.page.evaluate(_E2E).items():
            self.stages.setdefault(name, []).append(ms)

    def photo(self, photo: Path) -> dict[str, Any]:
        """The 1080p photo end to end: three warm browser runs (after one untimed), three native."""
        runs = self.page.evaluate(_PHOTO, [_b64(photo), 3])
        native = []
        for _ in range(4):
            t0 = time.perf_counter()
            image = read_image(photo)
            pred = self.runner.saliency(preprocess.fast([image], self.size))
            postprocess.fast_one(pred[0], image.shape[:2])
            native.append((time.perf_counter() - t0) * 1e3)
        return {"browser_end_to_end": statistics.median(r["ms"] for r in runs),
                "browser_stages": {k: statistics.median(r[k] for r in runs)
                                   for k in ("decode", "preprocess", "model", "postprocess")},
                "native_end_to_end": statistics.median(native[1:])}


def measure(contenders: list[Contender], photo: Path, min_time_s: float) -> list[dict[str, Any]]:
    """Every contender's four steps in one interleaved run, then the 1080p photo."""
    steps = [step for c in contenders for step in c.steps]
    for step in steps:  # warm-up: three calls each
        for _ in range(3):
            step.call()
    per_step, timed = interleave([(s, lambda: None) for s in steps], k=2, min_time_s=min_time_s, settle_s=0.2)

    def ratio(a: int, b: int) -> float:
        return statistics.median(x / y for x, y in zip(per_step[a], per_step[b]))

    results = []
    for i, c in enumerate(contenders):
        j = 4 * i
        med = [statistics.median(s) for s in per_step[j:j + 4]]
        results.append({
            "artifact": c.model.name, "precision": c.runner.info.precision, "input_size": list(c.size),
            "threads": {"browser": c.staged["threads"], "native": hardware.usable_cpus()},
            "rounds": len(per_step[0]), "timed_s": round(timed, 1),
            "ms": {"native_model": med[0], "native_end_to_end": med[1], "browser_model": med[2],
                   "browser_end_to_end": med[3]},
            "ratio": {"browser_end_to_end/native_model": ratio(j + 3, j), "browser_model/native_model": ratio(j + 2, j),
                      "browser_end_to_end/native_end_to_end": ratio(j + 3, j + 1)},
            "vs_first": {"native_model": ratio(j, 0), "browser_model": ratio(j + 2, 2)},  # e.g. INT8 ÷ FP32
            "browser_stages_ms": {k: statistics.median(v) for k, v in c.stages.items() if k != "session"},
            "first_load": {"bytes": c.loaded["bytes"], "files": c.loaded["files"], "ready_ms": c.loaded["readyMs"],
                           "session_ms": c.staged["sessionMs"],
                           "site_bytes": sum(p.stat().st_size for p in c.site.rglob("*") if p.is_file())},
            "photo_1080p_ms": c.photo(photo),
        })
    return results


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| artifact | native model ms | browser model ms | ratio | removeBackground ms | ratio to native model "
            "| native end to end ms | first load MB | session ms | 1080p browser ms (decode/pre/model/post) "
            "| 1080p native ms | model ÷ first artifact's: native, browser |", "|" + "---|" * 12]
    for r in results:
        ms, ratio, photo = r["ms"], r["ratio"], r["photo_1080p_ms"]
        stages = "/".join(f"{photo['browser_stages'][k]:.0f}" for k in ("decode", "preprocess", "model", "postprocess"))
        rows.append(f"| {r['artifact']} ({r['precision']}, {r['input_size'][0]}×{r['input_size'][1]}) "
                    f"| {ms['native_model']:.0f} | {ms['browser_model']:.0f} "
                    f"| {ratio['browser_model/native_model']:.2f}× | {ms['browser_end_to_end']:.0f} "
                    f"| {ratio['browser_end_to_end/native_model']:.2f}× | {ms['native_end_to_end']:.0f} "
                    f"| {r['first_load']['bytes'] / 1e6:.1f} | {r['first_load']['session_ms']:.0f} "
                    f"| {photo['browser_end_to_end']:.0f} ({stages}) | {photo['native_end_to_end']:.0f} "
                    f"| {r['vs_first']['native_model']:.2f}, {r['vs_first']['browser_model']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", required=True, help="ONNX artifact (repeat)")
    parser.add_argument("--ort-web", type=Path, default=DEFAULT_ORT_WEB, help="onnxruntime-web's dist folder")
    parser.add_argument("--images", type=Path, default=None,
                        help="images for end to end (default: 8 held-out ECSSD images)")
    parser.add_argument("--min-time-s", type=float, default=20.0, help="timed seconds of the interleaved rounds")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args()
    images = list_images(args.images)[:8] if args.images else spread(held_out_ecssd(), 8)
    if not images:
        sys.exit("no images: pass --images (ECSSD is not beside the repository)")
    before = hardware.describe(threads=hardware.usable_cpus())
    with tempfile.TemporaryDirectory(prefix="web_speed.") as tmp, chromium() as browser:
        workdir = Path(tmp)
        (workdir / "images").mkdir()
        for path in images:
            (workdir / "images" / path.name).symlink_to(path.resolve())
        photo = photo_1080p(images[0], workdir / "photo_1080p.jpg")
        with contextlib.ExitStack() as stack:
            contenders = [Contender(m, args.ort_web, images, workdir, browser, stack) for m in args.model]
            print(f"timing {', '.join(map(str, args.model))} ...", file=sys.stderr, flush=True)
            results = measure(contenders, photo, args.min_time_s)
    after = hardware.describe(threads=hardware.usable_cpus())
    runtime = find_runtime(args.ort_web)
    caption = (f"on: {hardware.one_line(before)}; load average at the end {after['load_average']}; "
               f"Chromium {browser_version()}, onnxruntime-web {runtime.version}; "
               f"1080p photo: {images[0].name} upscaled to 1920×1080 (bicubic), JPEG 92")
    print(table(results))
    print(caption)
    if args.json:
        write_json(args.json, {"results": results, "hardware": before, "load_average_end": after["load_average"],
                               "caption": caption})


def browser_version() -> str:
    import subprocess

    from u2deploy.export.web.browser import chromium_path

    out = subprocess.run([chromium_path() or "chromium", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split(" built")[0].removeprefix("Chromium ") or "?"


if __name__ == "__main__":
    main()
