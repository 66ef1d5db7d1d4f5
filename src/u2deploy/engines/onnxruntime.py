"""ONNX Runtime runner: CPU, and the CUDA / TensorRT execution providers where onnxruntime-gpu is."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import hardware
from ..artifact import ArtifactSpec
from ..errors import U2Error
from .base import ArtifactInfo, Runner
from .contract import check_contract

if TYPE_CHECKING:  # onnx (~0.3 s to import) is for the export stages' helpers below; the runner never needs it
    import onnx

log = logging.getLogger(__name__)
# Q/DQ pairs run as written around float ops, instead of being fused into ONNX Runtime's integer kernels.
QDQ_IN_FLOAT = ("session.disable_quant_qdq", "1")

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
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.threads = threads
        self.session = _load(path, options, wanted)
        check_contract(self.session, str(path))
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        spec = ArtifactSpec.from_metadata(metadata, str(path))
        self.emulated = emulates_tensorrt(spec, provider)
        if self.emulated:  # the metadata is known only once loaded: load again, Q/DQ in float
            options.add_session_config_entry(*QDQ_IN_FLOAT)
            self.session = _load(path, options, wanted)
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
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return {name: np.asarray(o, dtype=np.float32) for name, o in zip(self.info.output_names, outs)}

    def settings(self) -> dict[str, Any]:
        return {"threads": self.threads, "execution_provider": self.session.get_providers()[0],
                "qdq_in_float": self.emulated}

    def describe(self) -> str:
        return "onnxruntime (TensorRT emulated)" if self.emulated else "onnxruntime"

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def _load(path: Path, options, providers: list[str]):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types per failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise U2Error(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from None


def cpu_session(model: str | Path | bytes | onnx.ModelProto, optimise: bool = True, qdq_in_float: bool = False):
    """A quiet CPU session: what the export and precision stages verify their graphs with.

    ``optimise=False`` keeps every node as written, so intermediate tensors keep their names and
    Q/DQ or FP16-rounding nodes are not fused away. ``qdq_in_float`` runs Q/DQ pairs as such around
    float ops instead of ONNX Runtime's integer kernels: TensorRT's arithmetic, on any CPU.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if qdq_in_float:
        options.add_session_config_entry(*QDQ_IN_FLOAT)
    import onnx

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else (
        model if isinstance(model, bytes) else str(model))
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the float tensors ``names``, to read them in one run."""
    import onnx

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in dict.fromkeys(names) if name not in existing)
    return probe


def run_first_output(session, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """The first output for every row of ``x``; a static-batch model runs in chunks of its batch, padded."""
    inp = session.get_inputs()[0]
    static = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    step = batch or static or len(x)
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        pad = step - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outs.append(np.asarray(session.run(None, {inp.name: chunk})[0], dtype=np.float32)[:step - pad])
    return np.concatenate(outs)
