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
from onnx import helper

from ..errors import U2Error
from ..ort_session import cpu_session, with_outputs


@dataclass(frozen=True)
class LayerError:
    node: str
    op_type: str
    tensor: str
    sqnr_db: float
    drop_db: float  # SQNR of the worst input minus that of the output: what this node itself added
    max_abs: float
    max_ref: float


def _collect(model: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, list[np.ndarray]]:
    session = cpu_session(with_outputs(model, names), optimise=False)
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
    """Per-layer errors, in graph order, for the nodes of ``op_types`` whose output the quantized graph has.

    A layer's output is its own tensor, or that of the Relu right after it where the quantizer folded
    the Relu into the output's zero point (``--target cpu``). Each tensor is read after its
    DequantizeLinear where it has one: the value the next layer sees, and the only one left where
    the integer graph has no float tensor (a Concat of integers, see :mod:`.qdq_rewrites`).
    """
    quantized = onnx.ModelProto.FromString(quantized.SerializeToString())
    q_outputs = {out for n in quantized.graph.node for out in n.output}
    quantizer_of = {n.input[0]: n for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    producer = {o: n for n in float_model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in float_model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def in_quantized(name: str) -> str | None:
        """The value the next layer sees: the tensor's DequantizeLinear output, one added for a quantized
        tensor the integer graph dequantizes nowhere, else the float tensor itself."""
        if f"{name}_DequantizeLinear_Output" in q_outputs:
            return f"{name}_DequantizeLinear_Output"
        if name in quantizer_of:
            q = quantizer_of[name]
            probe = f"{name}_sensitivity_probe"
            if probe not in q_outputs:
                quantized.graph.node.append(helper.make_node("DequantizeLinear", [q.output[0], *q.input[1:]],
                                                             [probe], name=probe))
                q_outputs.add(probe)
            return probe
        return name if name in q_outputs else None

    def layer_output(node: onnx.NodeProto) -> str | None:
        users = consumers.get(node.output[0], [])
        fused = [users[0].output[0]] if len(users) == 1 and users[0].op_type == "Relu" else []
        return next((t for t in (node.output[0], *fused) if in_quantized(t)), None)

    layers = [(n, out) for n in float_model.graph.node if n.op_type in op_types and (out := layer_output(n))]
    if not layers:
        raise U2Error("no layer of the float model is found by name in the quantized one")
    tensors = dict.fromkeys([out for _, out in layers] + [i for n, _ in layers for i in n.input if i in producer])
    names = {t: q for t in tensors if (q := in_quantized(t)) is not None}
    ref = _collect(float_model, list(names), x)
    q_names = list(dict.fromkeys(names.values()))
    got_q = _collect(quantized, q_names, x)
    got = {t: got_q[q] for t, q in names.items()}
    sqnr = {name: sqnr_db(np.concatenate(ref[name]), np.concatenate(got[name])) for name in names}
    errors = []
    for node, out in layers:
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
    from ..onnx_file import load_onnx
    from .dataset import calibration_set, input_spec

    float_model, quantized = load_onnx(float_path), load_onnx(quantized_path)
    calib = calibration_set(calib_dir, input_spec(float_model, float_path), n, seed, warn_below=0)
    x = np.concatenate(list(calib.batches(1)))
    return layer_errors(float_model, quantized, x)
