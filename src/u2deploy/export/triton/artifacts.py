"""What a model repository needs to know of one artifact, read from the artifact itself.

Nothing here is a second reader: the I/O contract is :func:`~u2deploy.engines.contract.check_contract`'s
(one float32 N×3×H×W input, a first output N×1×H×W), the spec is :class:`~u2deploy.artifact.ArtifactSpec`,
read where each format keeps it (an ONNX file's ``metadata_props``, an OpenVINO IR's ``rt_info``
through :func:`~u2deploy.engines.openvino.read_spec_metadata`, a TensorRT engine's manifest through
:func:`~u2deploy.engines.trt_manifest.read_manifest`: an engine file says nothing of itself), and the
input size follows :func:`~u2deploy.artifact.resolve_input_size`. What this module adds is Triton's
view of them: each tensor's Triton data type and dims, the batch range, and the files to copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...artifact import PRECISIONS, ArtifactSpec, resolve_input_size
from ...engines.contract import TensorSpec, check_contract, io_specs
from ...engines.trt_manifest import manifest_path, read_manifest
from ...errors import U2Error
from ...formats import FORMATS, for_artifact
from .config import Tensor

# Element types as check_contract names them (ONNX's lower-case names) → Triton's; OpenVINO's own names
# for the types u2deploy.engines.openvino passes through as they are.
_TRITON_TYPES = {"float": "TYPE_FP32", "float16": "TYPE_FP16", "double": "TYPE_FP64", "bfloat16": "TYPE_BF16",
                 "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "uint16": "TYPE_UINT16", "int16": "TYPE_INT16",
                 "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
_OPENVINO_NAMES = {"bf16": "bfloat16", "u8": "uint8", "i8": "int8", "u16": "uint16", "i16": "int16",
                   "i32": "int32", "i64": "int64", "boolean": "bool"}


@dataclass(frozen=True)
class ArtifactFacts:
    """One artifact as a model directory needs it; tensors carry their full dims, batch first (-1: any size)."""

    path: Path
    format: str  # its u2deploy.formats key: "onnx", "trt" or "openvino"
    spec: ArtifactSpec
    input: Tensor
    outputs: tuple[Tensor, ...]
    batch_range: tuple[int, int] | None  # None: any batch
    files: tuple[tuple[Path, str], ...]  # (source, suffix after "model"): the model's own files
    manifest: Path | None  # the JSON its exporter wrote beside it, copied along
    build: Mapping[str, str] = field(default_factory=dict)  # TensorRT: the release and GPU it was built for

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """The graph's own H×W, when both are static."""
        h, w = self.input.dims[2:4]
        return (h, w) if h > 0 and w > 0 else None

    @property
    def input_size(self) -> tuple[int, int]:
        """The H×W images are resized to, by the rule every stage follows (``u2bench predict``'s too)."""
        return resolve_input_size(self.fixed_size, None, self.spec.input_size, str(self.path))


def read_artifact(path: str | Path) -> ArtifactFacts:
    """What Triton needs to know of one ``.onnx``, ``.engine`` or OpenVINO ``.xml``; a one-line U2Error if not."""
    path = Path(path)
    served = ", ".join(f"{f.suffix} ({f.name})" for f in FORMATS if f.triton)
    try:
        key = for_artifact(str(path)).key
    except U2Error:
        key = None
    if key not in _READERS:
        raise U2Error(f"{path}: not an artifact Triton serves; expected {served}")
    if not path.is_file():
        raise U2Error(f"{path}: no such file")
    return _READERS[key](path)


def _read_onnx(path: Path) -> ArtifactFacts:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise U2Error(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise U2Error(f"{path}: its weights are in external data files; save it as one file for Triton")
    return _from_graph(path, "onnx", model, {p.key: p.value for p in model.metadata_props}, ((path, ".onnx"),))


def _read_openvino(path: Path) -> ArtifactFacts:
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise U2Error(f"{path}: its weights {weights.name} are missing (an IR is .xml + .bin)")
    try:
        import openvino as ov
    except ImportError:
        raise U2Error(f"{path}: reading an OpenVINO IR needs OpenVINO (pip install -e '.[openvino]')") from None
    from ...engines.openvino import port_spec, read_spec_metadata

    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line message
        raise U2Error(f"{path}: OpenVINO cannot read it ({_first_line(exc)})") from None
    io = ([port_spec(p) for p in model.inputs], [port_spec(p) for p in model.outputs])
    return _from_graph(path, "openvino", io, read_spec_metadata(model), ((path, ".xml"), (weights, ".bin")))


def _from_graph(path: Path, fmt: str, io: Any, metadata: Mapping[str, str],
                files: tuple[tuple[Path, str], ...]) -> ArtifactFacts:
    """An ONNX graph or OpenVINO ports (as check_contract reads them): contract, tensors, batch, spec."""
    check_contract(io, str(path))
    inputs, outputs = io_specs(io)
    inp = _tensor(inputs[0], path)
    batch = inp.dims[0]
    manifest = manifest_path(path)  # every exporter writes FILE.json beside FILE, as u2export trt its manifest
    return ArtifactFacts(path, fmt, ArtifactSpec.from_metadata(metadata, str(path)), inp,
                         tuple(_tensor(o, path) for o in outputs), (batch, batch) if batch > 0 else None, files,
                         manifest if manifest.is_file() else None)


def _tensor(spec: TensorSpec, path: Path) -> Tensor:
    dtype = _OPENVINO_NAMES.get(spec.dtype, spec.dtype)
    if dtype not in _TRITON_TYPES:
        raise U2Error(f"{path}: {spec.name} is {spec.dtype}, which has no Triton data type")
    dims = () if spec.shape is None else tuple(d if isinstance(d, int) else -1 for d in spec.shape)
    return Tensor(spec.name, _TRITON_TYPES[dtype], dims)


def _read_engine(path: Path) -> ArtifactFacts:
    manifest = read_manifest(path)
    where = manifest_path(path)
    if manifest is None:
        raise U2Error(f"{path}: no manifest {where.name} beside it; an engine file does not say "
                      "its input names, shapes or the TensorRT release that built it (rebuild with u2export trt)")
    metadata = {k: str(v) for k, v in ((manifest.get("source_onnx") or {}).get("metadata") or {}).items()}
    if manifest.get("precision") in PRECISIONS:  # the engine's, not its source ONNX's (as the TensorRT runner reads it)
        metadata["precision"] = str(manifest["precision"])
    spec = ArtifactSpec.from_metadata(metadata, str(where))
    inputs = manifest.get("inputs") or {}
    outputs = manifest.get("outputs") or []
    if len(inputs) != 1 or not outputs:
        raise U2Error(f"{where}: expected one input and at least one output in the manifest")
    (input_name, profile), = inputs.items()
    if profile:
        lo, hi = profile["min"], profile["max"]
        dims = tuple(int(a) if a == b else -1 for a, b in zip(lo, hi))
        batch = (int(lo[0]), int(hi[0]))
    else:  # a static engine: the source ONNX's fixed batch and size
        if spec.input_size is None:
            raise U2Error(f"{where}: a static engine whose source ONNX records no input_size")
        n = spec.batch or 1
        dims, batch = (n, 3, *spec.input_size), (n, n)
    # The project's engines keep FP32 inputs and outputs (u2export fp16 and the builder leave them FP32).
    return ArtifactFacts(path, "trt", spec, Tensor(input_name, "TYPE_FP32", dims),
                         tuple(Tensor(str(o), "TYPE_FP32", (dims[0], 1, *dims[2:4])) for o in outputs),
                         batch, ((path, ".engine"),), where, _build(manifest))


def _build(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The TensorRT release and GPU an engine was built for (it loads only there), and how to rebuild it."""
    gpu = manifest.get("gpu") or {}
    build = {"tensorrt_version": str(manifest.get("tensorrt_version", "unknown")),
             "gpu": str(gpu.get("name", "unknown")),
             "gpu_compute_capability": str(gpu.get("compute_capability", "unknown")),
             "version_compatible": str(bool(manifest.get("version_compatible"))).lower(),
             "hardware_compatibility": str(manifest.get("hardware_compatibility", "NONE"))}
    if manifest.get("rebuild"):
        build["rebuild"] = str(manifest["rebuild"])
    return build


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__



# Each format whose row names a Triton backend (u2deploy.formats.Format.triton), read where it keeps its spec.
_READERS = {"onnx": _read_onnx, "trt": _read_engine, "openvino": _read_openvino}
