"""The table of artifact formats: how every ``--model`` is recognised and which runner executes it.

Each row says what the artifact is called, how its file is recognised, where it runs, which
export flags its ``u2export`` command takes, and which runner executes it; ``open_runner`` reads
the suffix and runner. A new format is a new row, not new branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import U2Error


@dataclass(frozen=True)
class Format:
    key: str  # what `u2export KEY` and `--format` say
    name: str  # what tables print
    suffix: str  # file suffix of the artifact; "" for the PyTorch baseline (`torch:small`)
    cpu: bool
    gpu: bool
    precisions: tuple[str, ...]
    export_flags: tuple[str, ...]
    runner: str  # "module:Class" under u2deploy.engines, imported only when used

    @property
    def backend(self) -> str:
        return self.runner.split(":")[0]


FORMATS: tuple[Format, ...] = (
    Format("torch", "PyTorch", "", True, True, ("fp32", "fp16", "bf16"),
           ("--weights",), "pytorch:TorchRunner"),
    Format("onnx", "ONNX", ".onnx", True, True, ("fp32", "fp16", "int8"),
           ("--size", "--batch", "--dynamic-batch", "--dynamic-hw", "--opset", "--outputs",
            "--no-simplify"), "ort:OnnxRuntimeRunner"),
    Format("trt", "TensorRT", ".engine", False, True, ("fp32", "fp16", "int8"),
           ("--fp16", "--int8", "--fp32", "--batch", "--workspace", "--timing-cache"),
           "trt:TensorRTRunner"),
    Format("openvino", "OpenVINO", ".xml", True, False, ("fp32", "fp16", "int8"),
           ("--int8", "--fp16", "--calib", "--num"), "openvino:OpenVinoRunner"),
)


def by_key(key: str) -> Format:
    for fmt in FORMATS:
        if fmt.key == key:
            return fmt
    raise U2Error(f"unknown format {key!r}; expected one of {', '.join(f.key for f in FORMATS)}")


def for_artifact(artifact: str) -> Format:
    """The format of ``torch:full`` / ``torch:small`` or of a file, from its suffix."""
    if artifact.startswith("torch:"):
        return by_key("torch")
    suffix = Path(artifact).suffix.lower()
    for fmt in FORMATS:
        if fmt.suffix and suffix == fmt.suffix:
            return fmt
    known = ", ".join(f"{f.suffix} ({f.name})" for f in FORMATS if f.suffix)
    raise U2Error(f"{artifact}: unknown artifact type; expected torch:full, torch:small, {known}")
