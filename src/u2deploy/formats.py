"""The table of artifact formats and the backends that run them: what every CLI choice is read from.

A *format* is a kind of file (``.onnx``, ``.engine``, an OpenVINO ``.xml``, or the PyTorch baseline
``torch:small``); a *backend* is a runtime with one runner, in ``u2deploy/engines/<name>.py``, and
one name everywhere (``--backend NAME``, ``runner.info.backend``, the module). A format lists the
backends that run it, its default first: an ONNX file runs on ONNX Runtime, or on OpenVINO with
``--backend openvino``.

Read by :func:`u2deploy.engines.open_runner` (which backend opens an artifact), ``u2bench``
(``--backend`` choices), ``u2export formats`` (this table, with what is installed here) and the
format's export command: ``export_flags`` are exactly the options of ``u2export KEY``
(``tests/test_formats.py`` keeps them equal). Adding a format is one row here, one runner module and
one export stage.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import U2Error


@dataclass(frozen=True)
class Backend:
    name: str  # --backend NAME, runner.info.backend, and the module u2deploy/engines/NAME.py
    title: str  # what tables print
    runner: str  # the Runner class in that module, imported only when used
    package: str  # the import that must succeed for it to run
    install: str  # how to get that package
    devices: tuple[str, ...]

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


@dataclass(frozen=True)
class Format:
    key: str  # `u2export KEY` builds it; FORMAT in FORMAT:PRECISION names
    name: str  # what tables print
    suffix: str  # file suffix; "" for the PyTorch baseline (`torch:small`)
    backends: tuple[str, ...]  # the backends that run it, the default first
    precisions: tuple[str, ...]
    export_command: str | None  # the `u2export` command that writes it; None for PyTorch
    export_flags: tuple[str, ...] = ()  # every option of that command
    # How to build each precision, when it is not `u2export KEY` itself (ONNX FP16 and INT8 are stages of their own).
    builds: Mapping[str, str] = field(default_factory=dict)

    def build_command(self, precision: str) -> str | None:
        """The ``u2export`` command that makes this format at ``precision`` (None for PyTorch)."""
        if precision not in self.precisions:
            raise U2Error(f"{self.key}:{precision}: {self.name} artifacts are {', '.join(self.precisions)}")
        return self.builds.get(precision) or (f"u2export {self.export_command}" if self.export_command else None)


BACKENDS: tuple[Backend, ...] = (
    Backend("torch", "PyTorch", "TorchRunner", "torch", "pip install torch==2.13.0", ("cpu", "cuda")),
    Backend("onnxruntime", "ONNX Runtime", "OnnxRuntimeRunner", "onnxruntime",
            "pip install onnxruntime (onnxruntime-gpu on a CUDA machine)", ("cpu", "cuda", "tensorrt")),
    Backend("tensorrt", "TensorRT", "TensorRTRunner", "tensorrt", "pip install 'u2deploy[gpu]' (with a CUDA GPU)",
            ("cuda",)),
    Backend("openvino", "OpenVINO", "OpenVinoRunner", "openvino", "pip install 'u2deploy[openvino]'", ("cpu",)),
    Backend("browser", "Chromium (onnxruntime-web)", "BrowserRunner", "playwright",
            "pip install 'u2deploy[web]' and apt-get install chromium", ("wasm", "webgpu")),
)

FORMATS: tuple[Format, ...] = (
    Format("torch", "PyTorch", "", ("torch",), ("fp32", "fp16", "bf16"), None),
    Format("onnx", "ONNX", ".onnx", ("onnxruntime", "openvino"), ("fp32", "fp16", "int8"), "onnx",
           ("--variant", "--weights", "--size", "--height", "--width", "--batch", "--dynamic-batch",
            "--dynamic-hw", "--opset", "--outputs", "--no-simplify", "--verify-images", "--output"),
           {"fp16": "u2export fp16", "int8": "u2export quantize --target cpu"}),
    Format("trt", "TensorRT", ".engine", ("tensorrt",), ("fp32", "fp16", "int8"), "trt",
           ("--onnx", "--variant", "--weights", "--fp16", "--int8", "--fp32", "--calib", "--int8-mode",
            "--calib-images", "--calib-batch", "--calib-seed", "--calib-cache", "--batch", "--min-batch",
            "--opt-batch", "--max-batch", "--size", "--workspace", "--timing-cache", "--version-compatible",
            "--hardware-compatible", "--device", "--verbose", "--verify-images", "--no-verify", "--output"),
           {"fp32": "u2export trt --fp32", "fp16": "u2export trt --fp16", "int8": "u2export trt --int8"}),
    Format("openvino", "OpenVINO", ".xml", ("openvino",), ("fp32", "fp16", "int8"), "openvino",
           ("--int8", "--fp16", "--calib", "--num", "--seed", "--verify-images", "--no-verify", "--output"),
           {"fp16": "u2export openvino --fp16", "int8": "u2export openvino --int8"}),
    # A site folder (u2export web): the artifact's own precision, in onnxruntime-web; its runner is the browser.
    Format("web", "Web (browser)", "/", ("browser",), ("fp32", "fp16", "int8"), "web",
           ("--output", "--ort-web", "--webgpu", "--overwrite", "--serve", "--port")),
)

BACKEND_NAMES: tuple[str, ...] = tuple(b.name for b in BACKENDS)


def backend(name: str) -> Backend:
    for entry in BACKENDS:
        if entry.name == name:
            return entry
    raise U2Error(f"--backend {name}: expected auto or one of {', '.join(BACKEND_NAMES)}")


def by_key(key: str) -> Format:
    for fmt in FORMATS:
        if fmt.key == key:
            return fmt
    raise U2Error(f"unknown format {key!r}; expected one of {', '.join(f.key for f in FORMATS)}")


def for_artifact(artifact: str) -> Format:
    """The format of ``torch:full`` / ``torch:small`` or of a file, from its suffix."""
    if artifact.startswith("torch:"):
        return by_key("torch")
    if artifact.endswith("/") or Path(artifact).is_dir():  # only a site (u2export web) is a folder
        return by_key("web")
    suffix = Path(artifact).suffix.lower()
    for fmt in FORMATS:
        if fmt.suffix and suffix == fmt.suffix:
            return fmt
    known = ", ".join(f"{f.suffix} ({f.name})" for f in FORMATS if f.suffix)
    raise U2Error(f"{artifact}: unknown artifact type; expected torch:full, torch:small, {known}")


def backend_for(artifact: str, name: str = "auto") -> Backend:
    """The backend that runs ``artifact``: the format's default for ``auto``, else ``name`` if it can."""
    fmt = for_artifact(artifact)
    if name == "auto":
        return backend(fmt.backends[0])
    chosen = backend(name)
    if chosen.name not in fmt.backends:
        hint = (" (ONNX Runtime's TensorRT execution provider is --device tensorrt; an engine is built "
                "with u2export trt)" if fmt.key == "onnx" and chosen.name == "tensorrt" else "")
        raise U2Error(f"{artifact}: {fmt.name} artifacts run on {' or '.join(fmt.backends)}, "
                      f"not --backend {chosen.name}{hint}")
    return chosen


def describe() -> str:
    """The table for people (``u2export formats``): what runs each format, whether it is installed here,
    and how to build it."""
    from .bench.report import text_table

    rows = []
    for fmt in FORMATS:
        runs = ", ".join(f"{name} {'✓' if backend(name).installed() else '✗'}" for name in fmt.backends)
        devices = ", ".join(dict.fromkeys(d for name in fmt.backends for d in backend(name).devices))
        built = "; ".join(f"{p}: {fmt.build_command(p)}" for p in fmt.precisions) if fmt.export_command else "-"
        rows.append([fmt.key, fmt.suffix or "torch:small|full", runs, devices, built])
    lines = [text_table(("format", "file", "backends (✓ installed here)", "devices", "built by"), rows), ""]
    lines += [f"u2export {f.export_command}: {' '.join(f.export_flags)}" for f in FORMATS if f.export_command]
    missing = [b for b in BACKENDS if not b.installed()]
    lines += [""] + [f"{b.name} is not installed: {b.install}" for b in missing] if missing else []
    return "\n".join(lines)
