"""Where does INT8 lose accuracy? Per-layer error of a quantized model against its float source.

Every Conv output (and every other tensor both graphs share) is read from the float model and the
Q/DQ model on a few calibration images; the report gives, per tensor, the signal-to-quantization-
noise ratio (SQNR, dB) and max |Δ|, plus how much SQNR the node itself lost relative to its worst
input (``drop``): a node with a large drop is a candidate for ``--exclude``. The Q/DQ graph runs
with graph optimisations off, so the names survive and the numbers are fake-quantization's (the
fused integer kernels round differently by at most one step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import U2Error


@dataclass(frozen=True)
class LayerError:
    node: str
    op_type: str
    tensor: str
    sqnr_db: float
    drop_db: float  # SQNR of the worst input minus that of the output: what this node itself added
    max_abs: float
    max_ref: float


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return probe.SerializeToString()


def _session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _collect(data: bytes, names: list[str], x: np.ndarray) -> dict[str, list[np.ndarray]]:
    session = _session(data)
    input_name = session.get_inputs()[0].name
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for row in x:
        values = session.run(names, {input_name: row[None]})
        for name, value in zip(names, values, strict=True):
            outs[name].append(value)
    return outs


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0:
        return float("inf")
    return 10 * np.log10(max(signal, 1e-30) / noise)


def layer_errors(float_model: onnx.ModelProto, quantized: onnx.ModelProto, x: np.ndarray,
                 op_types: tuple[str, ...] = ("Conv",)) -> list[LayerError]:
    """Per-layer errors, in graph order, for nodes of ``op_types`` found in both graphs by output name."""
    q_outputs = {out for n in quantized.graph.node for out in n.output}
    nodes = [n for n in float_model.graph.node if n.op_type in op_types and n.output[0] in q_outputs]
    if not nodes:
        raise U2Error("no layer of the float model is found by name in the quantized one")
    producer = {o: n for n in float_model.graph.node for o in n.output}
    wanted = list(dict.fromkeys([n.output[0] for n in nodes] + [
        i for n in nodes for i in n.input if i in producer and i in q_outputs]))
    ref = _collect(_with_outputs(float_model, wanted), wanted, x)
    got = _collect(_with_outputs(quantized, wanted), wanted, x)
    sqnr = {name: sqnr_db(np.concatenate(ref[name]), np.concatenate(got[name])) for name in wanted}
    errors = []
    for node in nodes:
        out = node.output[0]
        r, c = np.concatenate(ref[out]), np.concatenate(got[out])
        inputs = [sqnr[i] for i in node.input if i in sqnr]
        worst_in = min(inputs) if inputs else float("inf")
        errors.append(LayerError(node.name, node.op_type, out, sqnr[out],
                                 (worst_in - sqnr[out]) if np.isfinite(worst_in) else float("nan"),
                                 float(np.abs(r - c).max()), float(np.abs(r).max())))
    return errors


def report(errors: list[LayerError], top: int = 10) -> str:
    """The worst layers by SQNR drop, then the lowest-SQNR outputs; a table that fits a terminal."""
    worst = sorted(errors, key=lambda e: -e.drop_db if np.isfinite(e.drop_db) else np.inf)[:top]
    lines = [f"{'node':58} {'SQNR dB':>8} {'drop dB':>8} {'max|Δ|':>9} {'max|ref|':>9}"]
    for e in worst:
        lines.append(f"{e.node[-58:]:58} {e.sqnr_db:8.1f} {e.drop_db:8.1f} {e.max_abs:9.3g} {e.max_ref:9.3g}")
    final = errors[-1]
    lines.append(f"last quantized layer {final.node}: SQNR {final.sqnr_db:.1f} dB; "
                 f"exclude a layer with a large drop: u2export quantize … --exclude NODE")
    return "\n".join(lines)


def sensitivity(float_path: Path, quantized_path: Path, calib_dir: Path, n: int = 4,
                seed: int = 0) -> list[LayerError]:
    """Per-layer errors of ``quantized_path`` on ``n`` images sampled from ``calib_dir``."""
    from .dataset import calibration_set, input_spec
    from .qdq_rules import load_onnx

    float_model, quantized = load_onnx(float_path), load_onnx(quantized_path)
    calib = calibration_set(calib_dir, input_spec(float_model, float_path), n, seed)
    x = np.concatenate(list(calib.batches(1)))
    return layer_errors(float_model, quantized, x)
