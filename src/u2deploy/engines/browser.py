"""Runner for a ``u2export web`` site: its model in headless Chromium's onnxruntime-web, the runtime a
visitor's browser runs (WASM on the CPU, or WebGPU).

It takes the preprocessed batch like every runner, so ``u2bench parity --candidates SITE`` gates the
browser's own arithmetic against PyTorch and ``u2bench latency --model SITE`` times it (the tensor
crosses into the page as base64, which the model-only time of :mod:`tools.web_speed` leaves out).
Playwright's synchronous API belongs to the thread that started it, and ``u2bench predict`` calls a
runner from its own inference thread, so one thread owns the browser and serves calls from a queue.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import U2Error
from .base import ArtifactInfo, Runner

DEVICES = {"cpu": "wasm", "wasm": "wasm", "webgpu": "webgpu"}  # cpu: what the other runners call WASM's device
_INFER = """async ([b64, dims, options]) => {
  const m = await import('./u2deploy.mjs');
  const y = await m.internals.infer(m.internals.fromBase64(b64, Float32Array), dims, options);
  return { b64: m.internals.toBase64(y.data), dims: y.dims };
}"""
_LOAD = """async (options) => {
  const m = await import('./u2deploy.mjs');
  const run = await m.load(options);
  return { threads: run.threads, backend: run.backend, sessionMs: run.sessionMs };
}"""


class BrowserRunner(Runner):
    def __init__(self, site: Path, description: dict[str, Any], device: str, threads: int | None) -> None:
        from ..export.web.browser import missing

        why = missing()
        if why:
            raise U2Error(f"{site}: running a site {why}")
        self.site, self.description = site, description
        self.options = {"backend": DEVICES[device], **({"threads": threads} if threads else {})}
        model = description["webgpu" if self.options["backend"] == "webgpu" else "model"]
        size = tuple(description["spec"]["input_size"])
        self.info = ArtifactInfo(
            path=str(site), backend="browser", precision=description["spec"]["precision"],
            device="webgpu" if self.options["backend"] == "webgpu" else "cpu", input_size=size,  # type: ignore[arg-type]
            batch_range=None, output_names=(model["output"],), size_bytes=(site / model["file"]).stat().st_size,
            metadata=dict(description["metadata"]))
        self._calls: queue.Queue = queue.Queue()
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._own_browser, args=(started,), name="u2web-browser", daemon=True)
        self._thread.start()
        self.session = started.result()

    @classmethod
    def open(cls, artifact: str, device: str = "cpu", threads: int | None = None) -> BrowserRunner:
        from ..export.web.site import SPEC_FILE

        site = Path(artifact)
        if device not in DEVICES:
            raise U2Error(f"--device {device}: a site runs on cpu (WASM) or webgpu")
        if not (site / SPEC_FILE).is_file():
            raise U2Error(f"{site}: not a site u2export web wrote (no {SPEC_FILE})")
        try:
            description = json.loads((site / SPEC_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise U2Error(f"{site}: {SPEC_FILE} is unreadable ({exc})") from None
        if DEVICES[device] == "webgpu" and not description.get("webgpu"):
            raise U2Error(f"{site}: exported without --webgpu; it runs on cpu (WASM) only")
        return cls(site, description, device, threads)

    def _own_browser(self, started: concurrent.futures.Future) -> None:
        from ..export.web.browser import page_at
        from ..export.web.serve import serving

        try:
            with serving(self.site) as url, page_at(url + "u2deploy.json",
                                                    webgpu=self.options["backend"] == "webgpu") as page:
                started.set_result(page.evaluate(_LOAD, self.options))
                while (call := self._calls.get()) is not None:
                    x, done = call
                    try:
                        out = page.evaluate(_INFER, [base64.b64encode(x.tobytes()).decode(), list(x.shape),
                                                     self.options])
                        done.set_result(np.frombuffer(base64.b64decode(out["b64"]), np.float32).reshape(out["dims"]))
                    except Exception as exc:  # Playwright's Error: the page's exception, as one line
                        done.set_exception(U2Error(f"{self.site}: the browser failed ({str(exc).splitlines()[0]})"))
        except Exception as exc:
            if not started.done():
                started.set_exception(exc if isinstance(exc, U2Error) else U2Error(
                    f"{self.site}: headless Chromium could not run it ({str(exc).splitlines()[0]})"))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One page call per image: the site runs batch 1."""
        outs = []
        for image in np.ascontiguousarray(batch, dtype=np.float32):
            done: concurrent.futures.Future = concurrent.futures.Future()
            self._calls.put((image[None], done))
            outs.append(done.result())
        return {self.info.output_names[0]: np.concatenate(outs)}

    def settings(self) -> dict[str, Any]:
        return {**self.session, "onnxruntime_web": self.description["runtime"]["onnxruntime_web"]}

    def describe(self) -> str:
        return f"browser (Chromium, onnxruntime-web {self.options['backend']})"

    def close(self) -> None:
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join(timeout=30)
