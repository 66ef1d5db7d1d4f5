"""ONNX Runtime runner: CPU, and the CUDA / TensorRT execution providers where onnxruntime-gpu is."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import hardware
from ..artifact import ArtifactSpec
from ..errors import U2Error
from ..onnx_file import read_metadata
from ..ort_session import QDQ_IN_FLOAT, load_session, ort_error_line, ort_errors
from .base import ArtifactInfo, Runner
from .contract import check_contract

log = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def emulates_tensorrt(spec: ArtifactSpec, provider: str) -> bool:
    """A ``--target tensorrt`` Q/DQ graph on the CPU provider runs as TensorRT computes it: Q/DQ in float.

    ONNX Runtime would otherwise fuse it into its own u8 kernels (shifting the s8 activations), whose
    int16 pair sums saturate on x86 without VNNI; TensorRT's int8 kernels accumulate in int32.
    """
    return provider == "cpu" and spec.precision == "int8" and spec.quant_target == "tensorrt"


def warn_if_saturating(path: Path, spec: ArtifactSpec, provider: str = "cpu") -> None:
    """One warning line when an artifact that needs an int8 dot product meets an x86 CPU without one."""
    if provider == "cpu" and spec.requires_int8_dot_product and hardware.int8_saturates():
        log.warning("%s: built with 8-bit weights for CPUs with VNNI, AMX or ARM dot product; this CPU (%s) "
                    "has none, so its int8 sums saturate and the maps will differ: rebuild with "
                    "u2export quantize --target cpu (without --vnni-only)", path, hardware.cpu()["model"])


class OnnxRuntimeRunner(Runner):
    """An ``InferenceSession`` with full graph optimisation; ``provider`` picks the device.

    A TensorRT-target INT8 graph runs emulated on the CPU provider (see :func:`emulates_tensorrt`).
    """

    def __init__(self, path: Path, provider: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        if provider not in _PROVIDERS:
            raise U2Error(f"--device {provider}: ONNX Runtime runs on cpu, cuda or tensorrt")
        wanted = _PROVIDERS[provider]
        if wanted[0] not in ort.get_available_providers():
            raise U2Error(f"{wanted[0]} is not available in this onnxruntime "
                          f"(install onnxruntime-gpu instead of onnxruntime on a CUDA machine)")
        metadata = read_metadata(path)  # what the artifact is decides how to load it: one session, built once
        spec = ArtifactSpec.from_metadata(metadata, str(path))
        self.emulated = emulates_tensorrt(spec, provider)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if self.emulated:
            options.add_session_config_entry(*QDQ_IN_FLOAT)
        self.threads = threads
        self.session = load_session(path, options, wanted)
        check_contract(self.session, str(path))
        warn_if_saturating(path, spec, provider)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        n, _, h, w = inp.shape
        size = (_static(h), _static(w))
        batch = _static(n)
        self.info = ArtifactInfo(
            path=str(path), backend="onnxruntime",
            precision=spec.precision,
            device="cpu" if provider == "cpu" else "cuda",
            input_size=size if None not in size else None,  # type: ignore[arg-type]
            batch_range=(batch, batch) if batch else None,
            output_names=tuple(o.name for o in self.session.get_outputs()),
            size_bytes=path.stat().st_size, metadata=metadata)

    @classmethod
    def open(cls, artifact: str, device: str = "cpu", threads: int | None = None) -> OnnxRuntimeRunner:
        path = Path(artifact)
        if not path.is_file():
            raise U2Error(f"{path}: no such ONNX file")
        return cls(path, device, threads)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            outs = self.session.run(None, {self.input_name: x})
        except ort_errors() as exc:
            shape = "×".join(map(str, x.shape))
            raise U2Error(f"{self.info.path}: ONNX Runtime cannot run it on a {shape} batch "
                          f"({ort_error_line(exc)})") from None
        return {name: np.asarray(o, dtype=np.float32) for name, o in zip(self.info.output_names, outs)}

    def settings(self) -> dict[str, Any]:
        return {"threads": self.threads, "execution_provider": self.session.get_providers()[0],
                "qdq_in_float": self.emulated}

    def describe(self) -> str:
        return "onnxruntime (TensorRT emulated)" if self.emulated else "onnxruntime"

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
