"""What the benchmark is asked to build: ``FORMAT:PRECISION`` names of the format table
(:mod:`u2deploy.formats`), the default list, and why one of them cannot run on this machine.

A name that cannot run here is never dropped silently: :func:`unavailable` gives the one line the
table prints under a ``⏭`` and the JSON row carries as ``"status": "skipped: <reason>"``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ... import hardware
from ...errors import U2Error
from ...formats import FORMATS, Backend, Format, backend, by_key, by_name

REFERENCE = ("torch", "fp32")  # what every artifact is gated against
BASELINE = ("onnx", "fp32")  # the denominator of every ratio and the source of every other artifact
# Asked for by name only: an FP32 engine is never the one to ship where the FP16 one passes, and a site
# (u2export web) is another product, the visitor's own browser, timed here through headless Chromium.
NOT_BY_DEFAULT = {("trt", "fp32"), ("web", "fp32"), ("web", "fp16"), ("web", "int8")}


@dataclass(frozen=True)
class Target:
    """One ``FORMAT:PRECISION`` asked for."""

    fmt: Format
    precision: str

    @property
    def name(self) -> str:
        return f"{self.fmt.key}:{self.precision}"

    @property
    def backend(self) -> Backend:
        return backend(self.fmt.backends[0])

    @property
    def key(self) -> tuple[str, str]:
        return self.fmt.key, self.precision


def all_names() -> list[str]:
    return [f"{f.key}:{p}" for f in FORMATS for p in f.precisions]


def default_names() -> list[str]:
    """PyTorch FP32 (the reference), ONNX FP32, FP16 and INT8, then every other exported format's
    precisions (OpenVINO, TensorRT FP16/INT8; not :data:`NOT_BY_DEFAULT`): those that cannot run here are
    listed as skipped."""
    names = ["torch:fp32", "onnx:fp32", "onnx:fp16", "onnx:int8"]
    names += [f"{f.key}:{p}" for f in FORMATS if f.key not in ("torch", "onnx") for p in f.precisions
              if (f.key, p) not in NOT_BY_DEFAULT]
    return names


def parse_formats(text: str | Sequence[str] | None) -> list[Target]:
    """``--formats onnx:fp32,onnx:int8`` (None: :func:`default_names`), the reference and baseline first."""
    if text is None:
        names = default_names()
    else:
        items = text.split(",") if isinstance(text, str) else [n for t in text for n in t.split(",")]
        names = [n.strip() for n in items if n.strip()]
        if not names:
            raise U2Error(f"--formats {text!r}: no FORMAT:PRECISION name; known: {', '.join(all_names())}")
    targets = [Target(by_key(REFERENCE[0]), REFERENCE[1]), Target(by_key(BASELINE[0]), BASELINE[1])]
    targets += [_parse_one(name) for name in names]
    seen: set[tuple[str, str]] = set()
    return [t for t in targets if not (t.key in seen or seen.add(t.key))]  # type: ignore[func-returns-value]


def _parse_one(name: str) -> Target:
    try:
        fmt, precision = by_name(name)
    except U2Error as exc:
        raise U2Error(f"--formats {exc}") from None
    if fmt.key != "torch" and fmt.build(precision) is None:
        raise U2Error(f"--formats {name}: the format table has no build stage for it")
    return Target(fmt, precision)


def unavailable(target: Target, device: str, calib_dir: Path | None) -> str | None:
    """Why ``target`` cannot be built or run here (one line), or None."""
    fmt, precision, entry = target.fmt, target.precision, target.backend
    if fmt.key == "torch":
        if precision == "fp32":
            return None
        return (f"PyTorch runs here as the FP32 reference only; {precision} autocast is no exported artifact "
                f"(time it with u2bench latency --model torch:small --precision {precision})")
    if fmt.key == "trt":
        why = _tensorrt_missing(entry)
        if why:
            return why
    else:
        why = entry.why_not_here()
        if why:
            return why
        if device not in entry.devices:
            return f"{entry.title} runs on {' or '.join(entry.devices)}, not --device {device}"
        if device == "cuda" and entry.name == "onnxruntime" and not _ort_has_cuda():
            return "ONNX Runtime here has no CUDAExecutionProvider (install onnxruntime-gpu instead of onnxruntime)"
    if precision == "int8":
        if fmt.key == "openvino" and importlib.util.find_spec("nncf") is None:
            return "OpenVINO INT8 is calibrated by NNCF, which is not installed (pip install -e '.[openvino]')"
        if calib_dir is None or not calib_dir.is_dir():
            return (f"INT8 needs calibration images: pass --calib DIR ({calib_dir} is not a folder; never the "
                    "images you evaluate on)")
    return None


def _tensorrt_missing(entry: Backend) -> str | None:
    if hardware.gpu() is None:
        return "needs a CUDA GPU and TensorRT; this machine has no CUDA GPU" + (
            "" if entry.installed() else " and no TensorRT")
    if not entry.installed():
        return f"needs TensorRT, which is not installed here ({entry.install})"
    from ...engines.trt_compat import probe_environment

    try:
        probe_environment(purpose="TensorRT engines")
    except U2Error as exc:
        return str(exc)
    return None


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def target_device(target: Target, device: str) -> str:
    """Where ``target`` is timed (and, but for PyTorch, gated: the parity reference always runs on the CPU)."""
    return "cuda" if target.fmt.key == "trt" else device
