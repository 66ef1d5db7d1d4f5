"""onnxruntime-web's files: the one version pin, where an npm install keeps them, which ones a site needs.

The site carries its own copy of the runtime (``--ort-web DIR``, an npm-installed
``onnxruntime-web/dist``) rather than a CDN URL: the page then works offline and on networks that
reach no CDN, the files are the ones the tests ran, and the headers that threaded WASM needs
(COOP/COEP) apply to same-origin files without asking a CDN for CORP/CORS on its workers and
``.wasm``. The pin is ``package.json`` beside this module (the npm form, so that
``npm install`` in ``tools/install_web_test_deps.sh`` reads the same line).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ...errors import U2Error

PACKAGE = "onnxruntime-web"
# Per backend: the ES module the page imports, then the Emscripten loader and binary it fetches itself.
# 'webgpu' is the bundle with ONNX Runtime's WebGPU execution provider (the asyncify build).
FILES: dict[str, tuple[str, ...]] = {
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
}
# Where --ort-web is looked for when not given: an npm install in the working folder, or the test install.
DEFAULT_PLACES = ("node_modules/onnxruntime-web/dist", ".web/node_modules/onnxruntime-web/dist")


def pinned_version() -> str:
    """The onnxruntime-web release the sites are built and tested with."""
    text = resources.files(__package__).joinpath("package.json").read_text()
    return json.loads(text)["dependencies"][PACKAGE]


@dataclass(frozen=True)
class Runtime:
    """An onnxruntime-web ``dist`` folder that has every file a site needs, and its release."""

    dist: Path
    version: str | None  # from the package.json above dist; None when there is none

    def files(self, backends: tuple[str, ...]) -> list[Path]:
        return [self.dist / name for b in backends for name in FILES[b]]

    def note(self) -> str | None:
        """A line for the status when this is not the pinned release."""
        pin = pinned_version()
        if self.version == pin:
            return None
        return f"onnxruntime-web {self.version or 'of unknown version'}, not the tested {pin}"


def find_runtime(ort_web: str | Path | None, backends: tuple[str, ...] = ("wasm",)) -> Runtime:
    """The ``dist`` folder given (or the package folder above it), else the first of :data:`DEFAULT_PLACES`
    (or ``$U2DEPLOY_ORT_WEB``); one line saying how to get it when it is missing or incomplete."""
    install = f"npm install {PACKAGE}@{pinned_version()} and pass --ort-web node_modules/{PACKAGE}/dist"
    if ort_web is None:
        places = [os.environ["U2DEPLOY_ORT_WEB"]] if os.environ.get("U2DEPLOY_ORT_WEB") else list(DEFAULT_PLACES)
        found = next((Path(p) for p in places if Path(p).is_dir()), None)
        if found is None:
            raise U2Error(f"onnxruntime-web not found (looked in {', '.join(places)}): {install}; "
                          "the site ships its own copy of the runtime")
        ort_web = found
    dist = Path(ort_web)
    if (dist / "dist").is_dir() and not (dist / FILES["wasm"][0]).exists():
        dist = dist / "dist"
    if not dist.is_dir():
        raise U2Error(f"--ort-web {ort_web}: no such folder ({install})")
    missing = [p.name for p in Runtime(dist, None).files(backends) if not p.is_file()]
    if missing:
        raise U2Error(f"--ort-web {ort_web}: not an onnxruntime-web dist folder ({', '.join(missing[:3])} missing); "
                      f"{install}")
    return Runtime(dist, _version(dist))


def _version(dist: Path) -> str | None:
    try:
        meta = json.loads((dist.parent / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("version") if meta.get("name") == PACKAGE else None
