"""The INT8/FP32 speed ratio this CPU's ONNX Runtime kernels can reach: the yardstick for the whole model.

What INT8 buys depends on the CPU, not on the model: 512-bit VNNI does four times the multiply-adds
of a 512-bit FMA per instruction, AVX2 without VNNI needs three instructions (VPMADDUBSW, VPMADDWD,
VPADDD) for what one FMA does in float. So a speed target for the model is set against what a
single, large convolution achieves *here*: the ceiling is one 3×3 convolution 128→64 at 320×320
(U²-Net†'s first decoder conv), batch 1, quantized by ``onnxruntime.quantization.quantize_static``
with its QDQ defaults but u8 activations and s8 per-channel weights, FP32 against INT8 in plain
sessions at ``threads`` threads, as the median of per-round ratios over alternating rounds
(:func:`u2deploy.bench.paired.interleave`). That single-conv graph also pays what a network pays
once, not per conv: quantizing its float input, NCHW↔NHWC transposes, dequantizing its output. So
the same rounds also give the *kernel* ratio, QLinearConv against the float Conv node alone (from
ONNX Runtime's profiler, NCHWc reorders excluded as in a whole float network): the lower bound a
model made only of such convs would approach. A few other convolutions of the network are timed
beside it: small channel counts are further from both.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import hardware
from ..plural import plural
from .paired import SETTLE_S, calls_per_round, interleave
from .report import text_table
from .timing import Step

MIN_ROUNDS = 15


@dataclass(frozen=True)
class ConvCase:
    name: str
    cin: int
    cout: int
    size: int
    kernel: int = 3
    dilation: int = 1

    @property
    def macs(self) -> int:
        return self.cin * self.cout * self.kernel**2 * self.size**2


CEILING = ConvCase("ceiling: U²-Net† stage1d in, 3×3 128→64", 128, 64, 320)
NETWORK_CONVS = (
    ConvCase("U²-Net† stage1 conv1, 3×3 64→16", 64, 16, 320),
    ConvCase("U²-Net† stage1 decoder, 3×3 32→16", 32, 16, 320),
    ConvCase("U²-Net† stage1 out, 3×3 32→64", 32, 64, 320),
    ConvCase("U²-Net† stage2 inner, 3×3 16→16", 16, 16, 160),
    ConvCase("U²-Net stage5 inner, 3×3 256→256 dilation 2", 256, 256, 20, dilation=2),
)


def conv_model(case: ConvCase, seed: int = 0) -> onnx.ModelProto:
    """One float Conv with bias, batch 1, random weights of a trained network's scale."""
    rng = np.random.default_rng(seed)
    fan_in = case.cin * case.kernel**2
    w = (rng.standard_normal((case.cout, case.cin, case.kernel, case.kernel)) * (2 / fan_in) ** 0.5)
    b = rng.standard_normal(case.cout) * 0.1
    pad = case.dilation * (case.kernel // 2)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[pad] * 4, dilations=[case.dilation] * 2,
                            kernel_shape=[case.kernel] * 2)
    shape = [1, case.cin, case.size, case.size]
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w.astype(np.float32), "w"),
                               numpy_helper.from_array(b.astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(case: ConvCase, n: int, seed: int) -> list[np.ndarray]:
    """Non-negative, as a conv's input after ReLU is."""
    rng = np.random.default_rng(seed)
    return [rng.random((1, case.cin, case.size, case.size), dtype=np.float32) for _ in range(n)]


def quantize_reference(fp32: Path, out: Path, case: ConvCase) -> None:
    """``quantize_static`` as a user would call it: QDQ, u8 activations, s8 per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(_inputs(case, 4, seed=1))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"x": x}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice: a single conv needs none
    try:
        quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def _session(path: Path, threads: int, profiled: bool = False):
    """Default options, as a user and rembg run them, at ``threads``; ``profiled`` also records per-node times."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profiled:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _kernel_ms(session, op_types: tuple[str, ...]) -> float:
    """Median ms of the session's conv kernel over every call, from its profile."""
    events = json.loads(Path(session.end_profiling()).read_text())
    durations = [e["dur"] / 1e3 for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                 and e.get("args", {}).get("op_name") in op_types]
    return statistics.median(durations) if durations else float("nan")


def time_case(case: ConvCase, threads: int, min_time_s: float, tmp: Path) -> dict[str, Any]:
    fp32 = tmp / "conv.onnx"
    int8 = tmp / "conv_int8.onnx"
    onnx.save(conv_model(case), str(fp32))
    quantize_reference(fp32, int8, case)
    x = _inputs(case, 1, seed=2)[0]
    # Plain sessions time the graph; profiled twins, in the same rounds, give the kernel times.
    sessions = [_session(fp32, threads), _session(int8, threads),
                _session(fp32, threads, profiled=True), _session(int8, threads, profiled=True)]
    steps = [(Step(call=lambda s=s: s.run(None, {"x": x}), covers="model"), lambda: None) for s in sessions]
    warm = []
    for step, _ in steps:
        step.call()  # first call: allocations and ONNX Runtime's lazy initialisation
        t0 = time.perf_counter()
        for _ in range(3):
            step.call()
        warm.append((time.perf_counter() - t0) * 1e3 / 3)
    k = calls_per_round(warm, 0.2)
    (fp32_ms, int8_ms, _, _), seconds = interleave(steps, k, min_time_s, min_rounds=MIN_ROUNDS,
                                                   settle_s=SETTLE_S if threads > 1 else 0.0)
    ratios = [i / f for i, f in zip(int8_ms, fp32_ms, strict=True)]
    fp32_med, int8_med = statistics.median(fp32_ms), statistics.median(int8_ms)
    fp32_kernel, int8_kernel = _kernel_ms(sessions[2], ("Conv", "FusedConv")), _kernel_ms(sessions[3], ("QLinearConv",))
    return {**asdict(case), "macs": case.macs, "threads": threads, "rounds": len(ratios), "calls_per_round": k,
            "fp32_ms": round(fp32_med, 4), "int8_ms": round(int8_med, 4),
            "fp32_gmac_s": round(case.macs / fp32_med / 1e6, 1), "int8_gmac_s": round(case.macs / int8_med / 1e6, 1),
            "ratio": round(statistics.median(ratios), 4), "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4), "timed_s": round(seconds, 2),
            "fp32_kernel_ms": round(fp32_kernel, 4), "int8_kernel_ms": round(int8_kernel, 4),
            "kernel_ratio": round(int8_kernel / fp32_kernel, 4)}


def measure(threads: int = 2, min_time_s: float = 6.0, cases: Sequence[ConvCase] = (CEILING, *NETWORK_CONVS)
            ) -> dict[str, Any]:
    """The ceiling (first case) and the other convolutions, each in its own interleaved run."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="u2ceiling.") as tmp_dir:
        rows = [time_case(case, threads, min_time_s, Path(tmp_dir)) for case in cases]
    return {"ceiling_ratio": rows[0]["ratio"], "kernel_ratio": rows[0]["kernel_ratio"], "threads": threads,
            "onnxruntime": ort.__version__,
            "definition": "INT8/FP32 ms of one 3×3 conv 128→64 at 320×320, batch 1, quantize_static QDQ "
                          "(u8 activations, s8 per-channel weights), plain sessions, median of per-round ratios",
            "cases": rows, "hardware": hardware.describe(threads)}


def render(result: dict[str, Any]) -> str:
    header, rows = table(result)
    return "\n".join([f"INT8 ceiling of this CPU at {plural(result['threads'], 'thread')} (ONNX Runtime "
                      f"{result['onnxruntime']}): {result['ceiling_ratio']:.3f}× FP32 for the single-conv graph, "
                      f"{result['kernel_ratio']:.3f}× for the conv kernel alone", text_table(header, rows),
                      f"on: {hardware.one_line(result['hardware'])}"])


def table(result: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("conv", "input", "GMAC", "FP32 ms", "FP32 GMAC/s", "INT8 ms", "INT8 GMAC/s", "graph INT8/FP32",
              "spread", "kernel INT8/FP32", "rounds")
    rows = [(c["name"], f"{c['cin']}×{c['size']}²", f"{c['macs'] / 1e9:.2f}", f"{c['fp32_ms']:.2f}",
             f"{c['fp32_gmac_s']:.0f}", f"{c['int8_ms']:.2f}", f"{c['int8_gmac_s']:.0f}", f"{c['ratio']:.3f}×",
             f"{c['ratio_min']:.3f}–{c['ratio_max']:.3f}", f"{c['kernel_ratio']:.3f}×", str(c["rounds"]))
            for c in result["cases"]]
    return header, rows
