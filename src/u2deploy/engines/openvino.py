"""OpenVINO runner: an IR (``.xml`` + ``.bin``, from ``u2export openvino``), or an ONNX file as it is
(``--backend openvino``), on OpenVINO's CPU plugin.

OpenVINO's CPU plugin computes in bf16 by default on CPUs with AVX-512 BF16 or AMX (some of this
project's machines), which would break an FP32 artifact's parity and blur an INT8 one's float
parts: every IR runs with ``INFERENCE_PRECISION_HINT=f32``. The artifact's spec
(:mod:`u2deploy.artifact`) travels in the IR's ``rt_info`` under ``u2deploy``, and in an ONNX
file's ``metadata_props`` as for every other runner.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..artifact import ArtifactSpec
from ..errors import U2Error
from .base import ArtifactInfo, Runner
from .contract import check_contract

RT_INFO_KEY = "u2deploy"
HINTS = ("latency", "throughput")


def read_spec_metadata(model) -> dict[str, str]:
    """The u2deploy metadata an exporter stored in an OpenVINO model's rt_info (empty when there is none)."""
    if not model.has_rt_info([RT_INFO_KEY]):
        return {}
    info = model.get_rt_info()[RT_INFO_KEY]
    return {str(k): str(v.astype(str) if hasattr(v, "astype") else v) for k, v in info.items()}


def port_spec(port) -> SimpleNamespace:
    """An OpenVINO port in the form :func:`~u2deploy.engines.contract.check_contract` reads."""
    element = {"f32": "float", "f16": "float16", "f64": "double"}.get(port.get_element_type().get_type_name(),
                                                                    port.get_element_type().get_type_name())
    shape = port.get_partial_shape()
    dims = None if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]
    return SimpleNamespace(name=port.get_any_name(), type=f"tensor({element})", shape=dims)


class OpenVinoRunner(Runner):
    """A compiled OpenVINO model on the CPU; ``hint`` is OpenVINO's latency or throughput performance hint."""

    def __init__(self, path: Path, threads: int | None = None, hint: str = "latency") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise U2Error(f"{path}: OpenVINO is not installed (pip install -e '.[openvino]')") from None
        if hint not in HINTS:
            raise U2Error(f"--hint {hint}: expected one of {', '.join(HINTS)}")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line message
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise U2Error(f"{path}: OpenVINO cannot read it ({first[:200]})") from None
        check_contract(([port_spec(p) for p in model.inputs], [port_spec(p) for p in model.outputs]), str(path))
        metadata = _onnx_metadata(path) if path.suffix.lower() == ".onnx" else read_spec_metadata(model)
        spec = ArtifactSpec.from_metadata(metadata, str(path))
        # f32 for every IR: an INT8 one's float parts too (bf16 there costs map accuracy for no gain here).
        config: dict[str, object] = {"PERFORMANCE_HINT": hint.upper(), "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.threads, self.hint = threads, hint
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        inp = model.inputs[0]
        shape = inp.get_partial_shape()
        static = [d.get_length() if d.is_static else None for d in shape]
        size = (static[2], static[3])
        self.info = ArtifactInfo(
            path=str(path), backend="openvino", precision=spec.precision, device="cpu",
            input_size=size if None not in size else None,  # type: ignore[arg-type]
            batch_range=(static[0], static[0]) if static[0] else None,
            output_names=tuple(p.get_any_name() for p in model.outputs),
            size_bytes=sum(f.stat().st_size for f in _files(path)), metadata=metadata)

    @classmethod
    def open(cls, artifact: str, device: str = "cpu", threads: int | None = None,
             hint: str = "latency") -> OpenVinoRunner:
        path = Path(artifact)
        if device != "cpu":
            raise U2Error(f"--device {device}: the OpenVINO runner runs on the CPU")
        if not path.is_file():
            raise U2Error(f"{path}: no such {'ONNX' if path.suffix.lower() == '.onnx' else 'OpenVINO IR'} file")
        if path.suffix.lower() != ".onnx" and not _weights_file(path).is_file():
            raise U2Error(f"{path}: its weights {_weights_file(path).name} are missing (an IR is .xml + .bin)")
        return cls(path, threads, hint)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        values = list(results.values())
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self.info.output_names, values)}

    def settings(self) -> dict[str, Any]:
        return {"threads": self.threads, "hint": self.hint,
                "inference_precision": str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))}

    def describe(self) -> str:
        return "openvino (from ONNX)" if Path(self.info.path).suffix.lower() == ".onnx" else "openvino"

    def close(self) -> None:
        self.request = self.compiled = None  # type: ignore[assignment]


def _weights_file(path: Path) -> Path:
    return path.with_suffix(".bin")


def _files(path: Path) -> list[Path]:
    return [path] if path.suffix.lower() == ".onnx" else [path, _weights_file(path)]


def _onnx_metadata(path: Path) -> dict[str, str]:
    """An ONNX file's metadata_props (its spec), read without its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
