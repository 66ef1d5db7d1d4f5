"""ONNX Runtime sessions as this package builds and runs them, below the runner and the stages.

:func:`load_session` is the runner's load, with one-line errors; :func:`cpu_session` is the quiet CPU
session the export, precision and calibration stages check their graphs with; :func:`run_outputs`
runs one in chunks of a static batch. :func:`ort_error_line` turns what ``InferenceSession.run``
raises into one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import U2Error

if TYPE_CHECKING:  # onnx (~0.3 s to import) is for the stages' helpers; the runner never needs it
    import onnx

# Q/DQ pairs run as written around float ops, instead of being fused into ONNX Runtime's integer kernels.
QDQ_IN_FLOAT = ("session.disable_quant_qdq", "1")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*(\w+)\s*:\s*")  # "… : 2 : INVALID_ARGUMENT : "


def load_session(path: Path, options: Any, providers: list[str]) -> Any:
    """An ``InferenceSession`` of the file; a one-line :class:`U2Error` naming it when ONNX Runtime refuses it."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types per failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise U2Error(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from None


def ort_errors() -> tuple[type[BaseException], ...]:
    """What a session's ``run`` raises when the graph cannot run an input: ONNX Runtime's own exception
    types (Fail, InvalidArgument, RuntimeException, EPFail …, which differ between releases) and what
    pybind11 makes of a C++ exception (RuntimeError, MemoryError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    own = tuple(c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception))
    return (*own, RuntimeError, MemoryError)


def ort_error_line(exc: BaseException) -> str:
    """ONNX Runtime's message in one line: ``INVALID_ARGUMENT: Got invalid dimensions for input …``."""
    text = " ".join(_ORT_PREFIX.sub(r"\1: ", str(exc).strip()).split()) or type(exc).__name__
    text = text.removesuffix(" Please fix either the inputs/outputs or the model.")
    return text if len(text) <= 300 else text[:299] + "…"


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


def run_outputs(session, x: np.ndarray, batch: int | None = None,
                names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Outputs by name (``names``; default: all) for every row of ``x``; a static-batch model runs in
    chunks of its batch, the last one padded."""
    inp = session.get_inputs()[0]
    static = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    step = batch or static or len(x)
    names = list(names) if names is not None else [o.name for o in session.get_outputs()]
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        pad = step - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        chunks.append([np.asarray(o, dtype=np.float32)[:step - pad] for o in session.run(names, {inp.name: chunk})])
    return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)}


def run_first_output(session, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """The first output (d0) for every row of ``x``, run as :func:`run_outputs` runs it."""
    first = session.get_outputs()[0].name
    return run_outputs(session, x, batch, [first])[first]
