"""The TensorRT build plan: every decision of a build, computed in plain Python before TensorRT is touched.

Why a plan: the decisions (which ONNX the parser reads, which network and builder flags, which
shapes the optimisation profile spans, whether a calibrator runs) differ between TensorRT 8.6,
10.x and 11.x, and none of those can be installed where this project is tested. As a pure function
of (TensorRT version, GPU, flags, ONNX inputs) the plan is tested for every version here; the
builder in :mod:`u2deploy.export.trt` only carries it out, looking flags up by the names held here,
and those names are checked against each release's real bindings (``tests/test_trt_api_names.py``).

Per version:

* **8.6**: explicit-batch network (``EXPLICIT_BATCH``); precision by builder flags (``FP16``,
  ``INT8``); ``--int8`` defaults to the implicit entropy calibrator fed from ``--calib`` images.
* **10.x**: strongly typed (``STRONGLY_TYPED``, there since 10.0), as NVIDIA recommends: every tensor
  keeps the type the ONNX gives it, so the nodes the FP16 stage kept in FP32 stay FP32 and a Q/DQ
  graph runs exactly the INT8 it declares. Precision flags are not allowed on a strongly typed
  network, so none is set. Only ``--int8-mode calibrator`` (the implicit calibrator, which needs
  the ``INT8`` flag) builds weakly typed, which 10.12 deprecated; the plan warns there.
* **11.x**: strongly typed only (``STRONGLY_TYPED`` is deprecated and implied; precision flags and
  calibrators are gone).

All three parse the same FP16 / Q/DQ ONNX (one artifact chain for all releases): ``--fp16`` the FP16
ONNX, ``--int8`` the Q/DQ ONNX made for TensorRT. Weakly typed INT8 builds (8.6, and the calibrator
on 10.x) also enable FP16 for layers left unquantised, except on GPUs without fast FP16. ``--fp32``
turns TF32 off (it is on by default), so that an FP32 engine computes in FP32 and meets the FP32 bound. Every build
keeps detailed layer information in the engine (``ProfilingVerbosity.DETAILED``), so that the
engine itself tells which precision each layer runs in (:mod:`u2deploy.engines.tensorrt` reads it
when the manifest is missing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import ArtifactSpec, resolve_input_size
from ..engines.trt_compat import TrtVersion, check_gpu_supported, has_fast_fp16
from ..errors import U2Error
from ..plural import plural

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("auto", "qdq", "calibrator")
_KIND_NAMES = {"fp32": "an FP32", "fp16": "an FP16", "qdq": "a Q/DQ (INT8)"}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an engine accepts; kernels are tuned for ``opt``."""

    min: int = 1
    opt: int = 1
    max: int = 1

    @classmethod
    def from_flags(cls, batch: int | None = None, min_batch: int | None = None,
                   opt_batch: int | None = None, max_batch: int | None = None) -> BatchRange | None:
        """``--batch N`` (all three) or ``--min/--opt/--max-batch``; None when none was given."""
        if batch is not None:
            if any(v is not None for v in (min_batch, opt_batch, max_batch)):
                raise U2Error("--batch fixes the batch size; leave out --min-batch/--opt-batch/--max-batch")
            low = opt = high = batch
        elif all(v is None for v in (min_batch, opt_batch, max_batch)):
            return None
        else:
            low = min_batch if min_batch is not None else 1
            opt = opt_batch if opt_batch is not None else low
            high = max_batch if max_batch is not None else max(low, opt)
        if low < 1:
            raise U2Error(f"batch sizes must be 1 or more, got {low}")
        if not low <= opt <= high:
            raise U2Error(f"batch range needs min <= opt <= max, got {low} <= {opt} <= {high}")
        return cls(low, opt, high)

    @property
    def dynamic(self) -> bool:
        return self.min != self.max


@dataclass(frozen=True)
class SourceModel:
    """What the build starts from: an ONNX file, or (``path`` None) a variant still to be exported."""

    kind: str  # "fp32", "fp16" or "qdq"
    batch: int | None  # fixed batch dimension; None when dynamic
    size: tuple[int, int] | None  # fixed (H, W); None when dynamic
    input_name: str | None = None
    outputs: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.path else "the exported ONNX"


@dataclass(frozen=True)
class BuildRequest:
    """The user's flags, as the builder received them."""

    precision: str
    batch: BatchRange | None = None
    size: tuple[int, int] | None = None  # for ONNX files whose H and W are dynamic
    workspace_gib: float | None = None
    int8_mode: str = "auto"
    calib_dir: Path | None = None
    calib_batch: int = 8
    version_compatible: bool = False
    hardware_compatible: bool = False


@dataclass(frozen=True)
class BuildPlan:
    tensorrt: str
    family: str  # "8.6", "10", "11"
    precision: str
    stages: tuple[str, ...]  # run before the build, in order: export_onnx, convert_fp16, quantize
    onnx_kind: str  # what the parser reads: "fp32", "fp16" or "qdq"
    int8_mode: str | None  # "qdq", "calibrator", or None for fp32/fp16
    strongly_typed: bool
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag member names
    builder_flags: tuple[str, ...]  # BuilderFlag member names
    cleared_flags: tuple[str, ...]  # BuilderFlag members on by default and turned off (TF32 for FP32 engines)
    hardware_compatibility: str  # HardwareCompatibilityLevel member name
    profiling_verbosity: str  # ProfilingVerbosity member name: DETAILED keeps each layer's types in the engine
    input_shape: Shape  # the shape built for (the profile's opt shape when there is a profile)
    profile: dict[str, list[int]] | None  # {"min", "opt", "max"} when any input dimension is dynamic
    calibration_shape: Shape | None  # batches fed to the implicit calibrator
    workspace_bytes: int | None
    warnings: tuple[str, ...] = ()

    @property
    def batch_range(self) -> tuple[int, int]:
        if self.profile:
            return self.profile["min"][0], self.profile["max"][0]
        return self.input_shape[0], self.input_shape[0]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_plan(version: TrtVersion, request: BuildRequest, source: SourceModel,
              gpu_cc: tuple[int, int] | None = None, gpu_name: str = "this GPU") -> BuildPlan:
    """Every decision of the build; a U2Error line for a combination that cannot be built."""
    family = version.family
    warnings: list[str] = []
    if gpu_cc is not None:
        check_gpu_supported(version, gpu_cc, gpu_name)
    if request.precision not in PRECISIONS:
        raise U2Error(f"precision {request.precision!r}: expected one of {', '.join(PRECISIONS)}")
    if request.int8_mode not in INT8_MODES:
        raise U2Error(f"--int8-mode {request.int8_mode}: expected one of {', '.join(INT8_MODES)}")
    if request.int8_mode != "auto" and request.precision != "int8":
        raise U2Error("--int8-mode applies to --int8 builds only")

    stages, onnx_kind, int8_mode = _sources(family, request, source)
    strongly_typed = family == "11" or (family == "10" and int8_mode != "calibrator")
    if family == "10" and int8_mode == "calibrator" and version.minor >= 12:
        warnings.append("--int8-mode calibrator builds a weakly typed network, deprecated since TensorRT 10.12 "
                        "and removed in 11: --int8-mode qdq builds INT8 from the Q/DQ ONNX, strongly typed")
    fast_fp16 = gpu_cc is None or has_fast_fp16(gpu_cc)
    if request.precision == "fp16" and not fast_fp16:
        warnings.append(f"--fp16 on {gpu_name} (compute capability {gpu_cc[0]}.{gpu_cc[1]}): this GPU runs "
                        "FP16 arithmetic far slower than FP32 (1/64 rate on consumer Pascal); "
                        "--int8 or --fp32 will be faster")

    if strongly_typed:
        # 10.x: opt in; 11.x: deprecated, accepted and implied. No precision flag: not allowed with it.
        network_flags: tuple[str, ...] = ("STRONGLY_TYPED",)
        builder_flags: list[str] = []
    else:
        network_flags = ("EXPLICIT_BATCH",) if family == "8.6" else ()
        builder_flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}[request.precision]
        if request.precision == "int8" and fast_fp16:
            builder_flags.append("FP16")  # layers without INT8 kernels run in FP16 rather than FP32
    if request.version_compatible:
        builder_flags.append("VERSION_COMPATIBLE")
    hardware = "NONE"
    if request.hardware_compatible:
        if gpu_cc is not None and gpu_cc < (8, 0):
            raise U2Error(f"--hardware-compatible builds for Ampere and newer (compute capability 8.0+); "
                          f"{gpu_name} has {gpu_cc[0]}.{gpu_cc[1]}")
        hardware = "AMPERE_PLUS"

    input_shape, profile = _shapes(request, source)
    calibration_shape = None
    if int8_mode == "calibrator":
        if request.calib_batch < 1:
            raise U2Error(f"--calib-batch must be 1 or more, got {request.calib_batch}")
        calibration_shape = (request.calib_batch if profile and source.batch is None else input_shape[0],
                             *input_shape[1:])
    workspace = None
    if request.workspace_gib is not None:
        if request.workspace_gib <= 0:
            raise U2Error(f"--workspace must be more than 0 GiB, got {request.workspace_gib}")
        workspace = int(request.workspace_gib * (1 << 30))
    return BuildPlan(
        tensorrt=str(version), family=family, precision=request.precision, stages=stages,
        onnx_kind=onnx_kind, int8_mode=int8_mode, strongly_typed=strongly_typed,
        network_flags=network_flags, builder_flags=tuple(builder_flags), hardware_compatibility=hardware,
        # TF32 (on by default) rounds FP32 convolutions to 10 mantissa bits on Ampere and newer: an engine
        # called FP32 is held to the FP32 bound, so it computes in FP32
        cleared_flags=("TF32",) if request.precision == "fp32" else (),
        profiling_verbosity="DETAILED",
        input_shape=input_shape, profile=profile, calibration_shape=calibration_shape,
        workspace_bytes=workspace, warnings=tuple(warnings))


def _sources(family: str, request: BuildRequest,
             source: SourceModel) -> tuple[tuple[str, ...], str, str | None]:
    """(stages to run first, kind of ONNX parsed, INT8 mode) for the requested precision."""
    stages: tuple[str, ...] = ("export_onnx",) if source.path is None else ()
    kind, precision = source.kind, request.precision
    wrong = f"{source.label} is {_KIND_NAMES.get(kind, kind)} ONNX"
    if precision == "fp32":
        if kind != "fp32":
            raise U2Error(f"{wrong}; --fp32 builds from the FP32 ONNX")
        return stages, "fp32", None
    if precision == "fp16":
        if kind == "qdq":
            raise U2Error(f"{wrong}; build it with --int8, or --fp16 from the FP32 or FP16 ONNX")
        return (stages + ("convert_fp16",) if kind == "fp32" else stages), "fp16", None
    if kind == "fp16":
        raise U2Error(f"{wrong}; --int8 builds from the FP32 ONNX (or its Q/DQ version)")
    if kind == "qdq":
        if request.int8_mode == "calibrator":
            raise U2Error(f"{wrong} already; the TensorRT calibrator needs the FP32 ONNX")
        return stages, "qdq", "qdq"
    mode = request.int8_mode
    if mode == "auto":
        mode = "calibrator" if family == "8.6" else "qdq"
    if mode == "calibrator" and family == "11":
        raise U2Error("TensorRT 11 has no implicit INT8 calibration (IInt8EntropyCalibrator2 and "
                      "BuilderFlag.INT8 were removed): use --int8-mode qdq, the Q/DQ ONNX")
    if request.calib_dir is None:
        why = "the TensorRT calibrator reads" if mode == "calibrator" else "the Q/DQ ONNX is calibrated on"
        raise U2Error(f"--int8 needs --calib DIR: {why} those images")
    if mode == "calibrator":
        return stages, "fp32", "calibrator"
    return stages + ("quantize",), "qdq", "qdq"


def _shapes(request: BuildRequest, source: SourceModel) -> tuple[Shape, dict[str, list[int]] | None]:
    """The shape to build for and, when any input dimension is dynamic, the optimisation profile."""
    size = resolve_input_size(source.size, request.size,
                              ArtifactSpec.from_metadata(source.metadata, source.label).input_size, source.label)
    batches = request.batch
    if source.batch is not None:
        if batches is not None and (batches.min, batches.max) != (source.batch, source.batch):
            raise U2Error(f"{source.label} has a fixed batch of {source.batch}; batch sizes "
                          f"{batches.min}..{batches.max} need an ONNX exported with a dynamic batch")
        batches = BatchRange(source.batch, source.batch, source.batch)
    batches = batches or BatchRange()
    shapes = {name: [n, 3, *size] for name, n in
              (("min", batches.min), ("opt", batches.opt), ("max", batches.max))}
    dynamic = source.batch is None or source.size is None
    return tuple(shapes["opt"]), (shapes if dynamic else None)


def describe_onnx(path: Path) -> SourceModel:
    """Read what the plan needs from an ONNX file: its kind, input dimensions, outputs, metadata."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise U2Error(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise U2Error(f"{path}: not a readable ONNX model ({why})") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise U2Error(f"{path}: expected one input tensor, found {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, None):
        raise U2Error(f"{path}: expected an N×3×H×W input, found {plural(len(dims), 'dimension')} {dims}")
    ops = {node.op_type for node in graph.node}
    metadata = {p.key: p.value for p in model.metadata_props}
    fp16 = onnx.TensorProto.FLOAT16
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        kind = "qdq"
    elif (ArtifactSpec.from_metadata(metadata, str(path)).precision == "fp16"
          or inputs[0].type.tensor_type.elem_type == fp16
          or sum(t.data_type == fp16 for t in graph.initializer)
          > sum(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer)):
        kind = "fp16"
    else:
        kind = "fp32"
    h, w = dims[2], dims[3]
    return SourceModel(kind=kind, batch=dims[0], size=(h, w) if h and w else None,
                       input_name=inputs[0].name, outputs=tuple(o.name for o in graph.output),
                       metadata=metadata, path=path)
