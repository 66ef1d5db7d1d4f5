"""The table of artifact formats and the backends that run them: what every CLI choice, every export
default and every benchmark build is read from.

A *format* is a kind of file (``.onnx``, ``.engine``, an OpenVINO ``.xml``, a ``u2export web`` site
folder, or the PyTorch baseline ``torch:small``); a *backend* is a runtime with one runner, in
``u2deploy/engines/<name>.py``, and one name everywhere (``--backend NAME``, ``runner.info.backend``,
the module). A format lists the backends that run it, its default first: an ONNX file runs on ONNX
Runtime, or on OpenVINO with ``--backend openvino``.

Each precision of a format has its :class:`Build`: the ``u2export`` command that makes it, the stage
that command runs (a function of :mod:`u2deploy.export.stages`, which ``u2bench benchmark`` calls),
the artifact it is built from, and the rule that names its file. The export commands take their
default output names from that rule, ``u2export formats`` lists each command's options as the
command itself declares them, and Triton reads which of its backends serves a format from
:attr:`Format.triton`. Adding a format is one row here, one runner module and one export stage.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
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
    # "module:function" returning why it cannot run here beyond its package (a browser binary), or None
    missing: str | None = None

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def why_not_here(self) -> str | None:
        """One line on what this machine lacks to run it, or None."""
        if not self.installed():
            return f"{self.title} is not installed ({self.install})"
        if self.missing is None:
            return None
        module, _, function = self.missing.partition(":")
        return getattr(importlib.import_module(module), function)()


@dataclass(frozen=True)
class Build:
    """How one precision of a format is made."""

    command: str  # the `u2export` command line that makes it, before its source and options
    stage: str  # the function of u2deploy.export.stages that runs that command's library call
    output: str  # its file name from a stem: "{stem}_fp16.onnx"
    source: str | None = "onnx:fp32"  # the FORMAT:PRECISION it is built from; None: from the network

    def output_name(self, stem: str, precision: str) -> str:
        """The default output for ``stem`` (a source file's stem or a base name): a precision tag the stem
        already ends with is not repeated (``u2netp_int8.onnx`` → ``u2netp_int8_openvino.xml``)."""
        return self.output.format(stem=re.sub(rf"_{precision}$", "", stem))


@dataclass(frozen=True)
class Format:
    key: str  # `FORMAT` in FORMAT:PRECISION names
    name: str  # what tables print
    suffix: str  # file suffix; "/" for a folder; "" for the PyTorch baseline (`torch:small`)
    backends: tuple[str, ...]  # the backends that run it, the default first
    precisions: tuple[str, ...]
    builds: Mapping[str, Build] = field(default_factory=dict)  # by precision; empty for PyTorch
    triton: tuple[str | None, str | None] | None = None  # Triton's (platform, backend) serving it; None: not served
    also_suffixes: tuple[str, ...] = ()  # other suffixes of the same files (".plan" for engines)

    def build(self, precision: str) -> Build | None:
        """How ``precision`` is made (None for PyTorch, which is no exported artifact)."""
        if precision not in self.precisions:
            raise U2Error(f"{self.key}:{precision}: {self.name} artifacts are {', '.join(self.precisions)}")
        return self.builds.get(precision)

    def build_command(self, precision: str) -> str | None:
        """The ``u2export`` command that makes this format at ``precision`` (None for PyTorch)."""
        made = self.build(precision)
        return made.command if made else None

    @property
    def commands(self) -> tuple[str, ...]:
        """The ``u2export`` commands that build it, each once."""
        return tuple(dict.fromkeys(b.command.split()[1] for b in self.builds.values()))


BACKENDS: tuple[Backend, ...] = (
    Backend("torch", "PyTorch", "TorchRunner", "torch", "pip install torch==2.13.0", ("cpu", "cuda")),
    Backend("onnxruntime", "ONNX Runtime", "OnnxRuntimeRunner", "onnxruntime",
            "pip install onnxruntime (onnxruntime-gpu on a CUDA machine)", ("cpu", "cuda", "tensorrt")),
    Backend("tensorrt", "TensorRT", "TensorRTRunner", "tensorrt", "pip install -e '.[gpu]', with a CUDA GPU",
            ("cuda",)),
    Backend("openvino", "OpenVINO", "OpenVinoRunner", "openvino", "pip install -e '.[openvino]'", ("cpu",)),
    # cpu is onnxruntime-web's WASM backend, the one every browser has
    Backend("browser", "Chromium (onnxruntime-web)", "BrowserRunner", "playwright",
            "pip install -e '.[web]', then tools/install_web_test_deps.sh", ("cpu", "webgpu"),
            missing="u2deploy.export.web.browser:missing"),
)

FORMATS: tuple[Format, ...] = (
    Format("torch", "PyTorch", "", ("torch",), ("fp32", "fp16", "bf16")),
    Format("onnx", "ONNX", ".onnx", ("onnxruntime", "openvino"), ("fp32", "fp16", "int8"), {
        "fp32": Build("u2export onnx", "onnx_fp32", "{stem}.onnx", source=None),
        "fp16": Build("u2export fp16", "onnx_fp16", "{stem}_fp16.onnx"),
        "int8": Build("u2export quantize --target cpu", "onnx_int8", "{stem}_int8.onnx")},
        triton=("onnxruntime_onnx", None)),
    Format("trt", "TensorRT", ".engine", ("tensorrt",), ("fp32", "fp16", "int8"), {
        p: Build(f"u2export trt --{p}", "trt_engine", f"{{stem}}_{p}.engine") for p in ("fp32", "fp16", "int8")},
        triton=("tensorrt_plan", None), also_suffixes=(".plan",)),
    Format("openvino", "OpenVINO", ".xml", ("openvino",), ("fp32", "fp16", "int8"), {
        "fp32": Build("u2export openvino", "openvino_ir", "{stem}_openvino.xml"),
        "fp16": Build("u2export openvino --fp16", "openvino_ir", "{stem}_fp16_openvino.xml"),
        "int8": Build("u2export openvino --int8", "openvino_ir", "{stem}_int8_openvino.xml")},
        triton=(None, "openvino")),
    # A site folder: the ONNX artifact of its precision in onnxruntime-web; its runner is the browser.
    Format("web", "Web (browser)", "/", ("browser",), ("fp32", "fp16", "int8"), {
        "fp32": Build("u2export web", "web_site", "{stem}_web"),
        "fp16": Build("u2export web", "web_site", "{stem}_fp16_web", source="onnx:fp16"),
        "int8": Build("u2export web", "web_site", "{stem}_int8_web", source="onnx:int8")}),
)

BACKEND_NAMES: tuple[str, ...] = tuple(b.name for b in BACKENDS)


def _unknown(what: str, name: str, known: list[str]) -> str:
    """``unknown format 'onnnx' (did you mean 'onnx'?); expected one of …``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; expected one of {', '.join(known)}"


def backend(name: str) -> Backend:
    for entry in BACKENDS:
        if entry.name == name:
            return entry
    raise U2Error(f"--backend {name}: {_unknown('backend', name, ['auto', *BACKEND_NAMES])}")


def by_key(key: str) -> Format:
    for fmt in FORMATS:
        if fmt.key == key:
            return fmt
    raise U2Error(_unknown("format", key, [f.key for f in FORMATS]))


def by_name(name: str) -> tuple[Format, str]:
    """``FORMAT:PRECISION`` → the row and the precision; a one-line U2Error naming the closest name."""
    known = [f"{f.key}:{p}" for f in FORMATS for p in f.precisions]
    key, sep, precision = name.strip().lower().partition(":")
    if not sep or not key or not precision:
        raise U2Error(f"{name}: expected FORMAT:PRECISION, one of {', '.join(known)}")
    try:
        fmt = by_key(key)
    except U2Error as exc:
        raise U2Error(f"{name}: {exc}") from None
    if precision not in fmt.precisions:
        raise U2Error(f"{name}: {fmt.name} artifacts are {', '.join(fmt.precisions)}")
    return fmt, precision


def for_artifact(artifact: str) -> Format:
    """The format of ``torch:full`` / ``torch:small`` or of a file, from its suffix."""
    if artifact.startswith("torch:"):
        return by_key("torch")
    if artifact.endswith("/") or Path(artifact).is_dir():  # only a site (u2export web) is a folder
        return by_key("web")
    suffix = Path(artifact).suffix.lower()
    for fmt in FORMATS:
        if fmt.suffix not in ("", "/") and suffix in (fmt.suffix, *fmt.also_suffixes):
            return fmt
    files = [f for f in FORMATS if f.suffix not in ("", "/")]
    close = difflib.get_close_matches(suffix, [s for f in files for s in (f.suffix, *f.also_suffixes)], n=1)
    hint = f" (did you mean {Path(artifact).stem}{close[0]}?)" if suffix and close else ""
    known = ", ".join(f"{f.suffix} ({f.name})" for f in files)
    raise U2Error(f"{artifact}: unknown artifact type{hint}; expected torch:full, torch:small, {known}, or a site "
                  "folder (u2export web)")


def default_output(key: str, precision: str, stem_of: str | Path) -> Path:
    """Where ``u2export`` writes ``key:precision`` built from ``stem_of`` (a source file, or a base name such
    as ``u2netp``) by default: beside it, named by the row's rule."""
    made = by_key(key).build(precision)
    assert made is not None, f"{key} is no exported format"
    path = Path(stem_of)
    stem = path.name[: -len(path.suffix)] if path.suffix in (".onnx", ".xml", ".engine") else path.name
    return path.with_name(made.output_name(stem, precision))


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


def describe(command_options: Mapping[str, list[str]] | None = None) -> str:
    """The table for people (``u2export formats``, ≤ 80 columns): what runs each format, whether it is
    installed here, and how each precision is built; then each export command's options as given."""
    from .text import text_table

    rows = []
    for fmt in FORMATS:
        runs = ", ".join(f"{name} {'✓' if backend(name).installed() else '✗'}" for name in fmt.backends)
        devices = ", ".join(dict.fromkeys(d for name in fmt.backends for d in backend(name).devices))
        rows.append([fmt.key, fmt.suffix or "torch:small|full", runs, devices])
    lines = [text_table(("format", "file", "backends (✓ installed here)", "devices"), rows), ""]
    built = [[f"{f.key}:{p}", b.command, b.source or "the network"]
             for f in FORMATS for p, b in f.builds.items()]
    lines += [text_table(("artifact", "built by", "built from"), built), ""]
    for name, options in (command_options or {}).items():
        lines += _wrapped(f"u2export {name}: ", options)
    missing = [b for b in BACKENDS if not b.installed()]
    lines += [""] + [f"{b.name} is not installed: {b.install}" for b in missing] if missing else []
    return "\n".join(lines)


def _wrapped(head: str, words: list[str], width: int = 80) -> list[str]:
    lines, line = [], head
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip() != head.strip():
            lines.append(line.rstrip())
            line = " " * 4
        line += word + " "
    return [*lines, line.rstrip()]
