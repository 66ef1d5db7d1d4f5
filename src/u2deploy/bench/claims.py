"""The paper's real-time claims next to what physics allows and what this machine measures.

The paper reports 30 FPS (33 ms) for U²-Net and 40 FPS (25 ms) for U²-Net† at 320×320 on a GTX 1080 Ti
(Table 2). Nothing can be run on a 1080 Ti here, so the check is a roofline argument: from the cost
counted on the network (:mod:`u2deploy.bench.cost`), a device with peak compute P and memory bandwidth
B cannot finish a pass in less than max(FLOPs / P, bytes / B). Every such floor is an *estimate* from
vendor figures; only the rows marked "measured" were run, on the machine at hand.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..hardware import cpu, describe
from ..plural import plural
from .cost import Cost, count_cost
from .report import text_table

VARIANT_NAMES = {"full": "U²-Net (full)", "small": "U²-Net† (small)"}


@dataclass(frozen=True)
class PaperClaim:
    fps: float
    ms: float
    size: tuple[int, int] = (320, 320)
    device: str = "GTX 1080 Ti"
    source: str = "Qin et al. 2020, Table 2"


PAPER = {"full": PaperClaim(30, 33), "small": PaperClaim(40, 25)}


@dataclass(frozen=True)
class Ceiling:
    """Peak arithmetic rate per precision (FLOP/s) and memory bandwidth (B/s) of one device."""

    name: str
    flops: dict[str, float]
    bandwidth: float
    source: str
    measured: bool = False
    notes: dict[str, str] = field(default_factory=dict)


GTX_1080_TI = Ceiling(
    "GTX 1080 Ti", {"fp32": 11.3e12, "fp16": 11.3e12 / 64}, 484e9,
    "NVIDIA GeForce GTX 1080 Ti specifications: 3584 CUDA cores × 1582 MHz boost × 2 = 11.3 TFLOP/s FP32, "
    "484 GB/s GDDR5X; GP102 runs FP16 arithmetic at 1/64 of the FP32 rate")
# NVIDIA H200 product page (https://www.nvidia.com/en-us/data-center/h200/), H200 SXM column: FP32 67
# TFLOPS; TF32 Tensor Core 989, FP16/BF16 Tensor Core 1,979, INT8 Tensor Core 3,958 TOPS, all quoted
# "with sparsity" (dense = half); memory bandwidth 4.8 TB/s. The NVL card is clocked lower.
H200_SXM = Ceiling(
    "H200 SXM", {"fp32": 67e12, "tf32": 989e12 / 2, "fp16": 1979e12 / 2, "bf16": 1979e12 / 2,
                 "int8": 3958e12 / 2}, 4.8e12,
    "NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200), SXM: 67 TFLOP/s FP32; Tensor Core "
    "TF32 989 / FP16 1,979 / INT8 3,958 T(FL)OP/s with sparsity, halved here for dense; 4.8 TB/s HBM3e")
SPEC_DEVICES = (GTX_1080_TI, H200_SXM)


# ------------------------------------------------------------------------------- measured ceilings

def _best_rate(work: float, call: Callable[[], object], sync: Callable[[], None], seconds: float) -> float:
    """Work per second of the fastest of repeated calls (the least disturbed by other load)."""
    call()
    sync()
    best = float("inf")
    start = time.perf_counter()
    reps = 0
    while reps < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        sync()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return work / best


def measure_ceilings(device: str = "cpu", seconds: float = 1.0, matmul_n: int = 1024,
                     copy_mib: int = 256) -> Ceiling:
    """A quick matmul GFLOP/s and a copy GB/s (bytes read + bytes written, as STREAM counts them)."""
    if device == "cuda":
        dev = torch.device("cuda")
        sync = torch.cuda.synchronize
        rates: dict[str, float] = {}
        old = torch.backends.cuda.matmul.allow_tf32
        try:
            for precision, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                           ("fp16", torch.float16, False)):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                a = torch.randn(4096, 4096, device=dev, dtype=dtype)
                rates[precision] = _best_rate(2 * 4096**3, lambda a=a: a @ a, sync, seconds / 3)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        src = torch.empty(copy_mib * 2**20 // 4, device=dev)
        dst = torch.empty_like(src)
        bandwidth = _best_rate(2 * src.numel() * 4, lambda: dst.copy_(src), sync, seconds)
        how = "torch.mm 4096² (fp32 with TF32 off, TF32, fp16); device-to-device copy_"
        return Ceiling(f"{torch.cuda.get_device_name()} (measured)", rates, bandwidth, how, measured=True)
    a = torch.randn(matmul_n, matmul_n)
    flops = _best_rate(2 * matmul_n**3, lambda: a @ a, lambda: None, seconds)
    src = np.ones(copy_mib * 2**20 // 8)
    dst = np.empty_like(src)
    bandwidth = _best_rate(2 * src.nbytes, lambda: np.copyto(dst, src), lambda: None, seconds)
    how = (f"torch.mm {matmul_n}² fp32 on {plural(torch.get_num_threads(), 'thread')}; numpy copyto of {copy_mib} MiB; "
           "fastest repetition, under whatever else the machine was running")
    return Ceiling(f"this CPU, {cpu()['model']} (measured)", {"fp32": flops}, bandwidth, how, measured=True)


# ---------------------------------------------------------------------------------------- the check

@dataclass(frozen=True)
class Floor:
    ms: float
    bound: str  # "compute" or "memory"


def floor(cost: Cost, ceiling: Ceiling, precision: str) -> Floor | None:
    """max(all FLOPs / peak, min bytes / bandwidth); None when the device has no such precision."""
    rate = ceiling.flops.get(precision)
    if rate is None:
        return None
    byte_cost = cost.at_precision(_storage(precision))
    compute = cost.total_flops / rate
    memory = byte_cost.min_bytes / ceiling.bandwidth
    return Floor(1e3 * max(compute, memory), "compute" if compute >= memory else "memory")


def _storage(precision: str) -> str:
    return "fp32" if precision == "tf32" else precision


def _measured_result(results: Sequence[dict[str, Any]], variant: str, size: tuple[int, int]
                     ) -> dict[str, Any] | None:
    for r in results:
        if r.get("variant") == variant and r["batch"] == 1 and tuple(r["size"]) == tuple(size):
            return r
    return None


def check(variants: Sequence[str] = ("full", "small"), size: tuple[int, int] = (320, 320),
          measured: Sequence[dict[str, Any]] = (), local: Ceiling | None = None) -> dict[str, Any]:
    """The whole comparison as data: per variant, cost, paper, floors per device, and measurement."""
    out: dict[str, Any] = {"size": list(size), "batch": 1, "variants": {}, "ceilings": []}
    devices = [*SPEC_DEVICES, *([local] if local else [])]
    for d in devices:
        out["ceilings"].append({"name": d.name, "flops": d.flops, "bandwidth": d.bandwidth,
                                "source": d.source, "measured": d.measured})
    for variant in variants:
        cost = count_cost(variant, tuple(size), 1, "fp32")
        paper = PAPER[variant]
        entry: dict[str, Any] = {"cost": cost.as_dict(), "paper": {
            "fps": paper.fps, "ms": paper.ms, "size": list(paper.size), "device": paper.device,
            "source": paper.source}}
        if tuple(size) == paper.size:
            implied = cost.total_flops / (paper.ms / 1e3)
            entry["paper"]["implied_flops_per_s"] = implied
            entry["paper"]["fraction_of_1080ti_fp32_peak"] = implied / GTX_1080_TI.flops["fp32"]
        floors = []
        for d in devices:
            for precision in d.flops:
                f = floor(cost, d, precision)
                if f is not None:
                    floors.append({"device": d.name, "precision": precision, "ms": f.ms, "bound": f.bound,
                                   "max_fps": 1e3 / f.ms, "kind": "measured ceiling" if d.measured
                                   else "estimate from vendor figures"})
        entry["floors"] = floors
        result = _measured_result(measured, variant, size)
        if result is not None:
            entry["measured"] = {k: result[k] for k in ("model", "backend", "device", "precision", "batch",
                                                        "size", "latency_ms", "fps", "weights")}
            if local is not None:
                f = floor(cost, local, "fp32")
                if f is not None:
                    entry["measured"]["fraction_of_local_floor"] = f.ms / result["latency_ms"]["mean"]
        out["variants"][variant] = entry
    return out


def _g(x: float) -> str:
    return f"{x / 1e9:.1f} G"


def _tera(rate: float) -> str:
    return f"{rate / 1e12:,.0f}" if rate >= 100e12 else f"{rate / 1e12:.3g}"


def _floor_of(entry: dict[str, Any], device: str, precision: str) -> float:
    return next(f["ms"] for f in entry["floors"] if (f["device"], f["precision"]) == (device, precision))


def _ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"


def render(report: dict[str, Any], width: int = 80) -> str:
    """Side by side, one column per variant, no line wider than ``width`` (long labels wrap in their column)."""
    variants = list(report["variants"])
    entries = [report["variants"][v] for v in variants]
    rows: list[list[str]] = []

    def add(name: str, cells: list[str]) -> None:
        rows.append([name, *cells])

    add("parameters", [f"{e['cost']['params']:,}" for e in entries])
    add("FLOPs, convolutions (2×MACs)", [_g(e["cost"]["flops"]) for e in entries])
    add("FLOPs, all operators", [_g(e["cost"]["total_flops"]) for e in entries])
    add("min bytes moved, fp32", [f"{e['cost']['bytes']['total'] / 1e6:.0f} MB" for e in entries])
    add("  of which weights", [f"{e['cost']['bytes']['weights'] / 1e6:.1f} MB" for e in entries])
    add("arithmetic intensity", [f"{e['cost']['intensity_flop_per_byte']:.0f} FLOP/B" for e in entries])
    add("paper, GTX 1080 Ti at 320x320", [f"{e['paper']['ms']:.0f} ms = {e['paper']['fps']:.0f} FPS"
                                           for e in entries])
    if all("implied_flops_per_s" in e["paper"] for e in entries):
        add("  implied sustained rate", [f"{e['paper']['implied_flops_per_s'] / 1e12:.2f} TFLOP/s" for e in entries])
        add("  share of the FP32 peak", [f"{100 * e['paper']['fraction_of_1080ti_fp32_peak']:.0f}%" for e in entries])
        add("  paper ÷ 1080 Ti FP32 floor", [f"{e['paper']['ms'] / _floor_of(e, GTX_1080_TI.name, 'fp32'):.1f}×"
                                             for e in entries])
    add("floor (least time per image):", ["" for _ in entries])
    keys = list(dict.fromkeys((f["device"], f["precision"], f["kind"]) for f in entries[0]["floors"]))
    for device, precision, kind in keys:
        cells = []
        for e in entries:
            f = next(x for x in e["floors"] if (x["device"], x["precision"]) == (device, precision))
            fps = 1e3 / f["ms"]
            cells.append(f"{_ms(f['ms'])} ms = {fps:,.0f} FPS" if fps >= 10 else f"{_ms(f['ms'])} ms = {fps:.2f} FPS")
            cells[-1] += "*" if f["bound"] == "memory" else ""
        short = device.removesuffix(" (measured)").split(",")[0]  # the local CPU's model is in the notes
        add(f"  {short} {precision} ({'measured peaks' if kind == 'measured ceiling' else 'estimate'})", cells)
    if any("measured" in e for e in entries):
        first = next(e["measured"] for e in entries if "measured" in e)
        add(f"measured mean: {first['backend']} {first['device']} {first['precision']}",
            [f"{e['measured']['latency_ms']['mean']:.1f} ms = {e['measured']['fps']:.2f} FPS" if "measured" in e
             else "not measured" for e in entries])
        add("  p50", [f"{e['measured']['latency_ms']['p50']:.1f} ms" if "measured" in e else "" for e in entries])
        if any("fraction_of_local_floor" in e.get("measured", {}) for e in entries):
            add("  local floor ÷ measured mean", [
                f"{100 * e['measured']['fraction_of_local_floor']:.0f}%" if "fraction_of_local_floor"
                in e.get("measured", {}) else "" for e in entries])
    size = "x".join(map(str, report["size"]))
    table = _fitted_table([f"{size}, batch 1", *[VARIANT_NAMES[v] for v in variants]], rows, width)
    notes = ["floors = max(all FLOPs / peak FLOP/s, min bytes / bandwidth) for one image, i.e. the most FPS; "
             "* marks a memory-bound floor (the others are compute-bound); bytes: weights once, each fused "
             "conv-BN-ReLU output written once and read once (see u2deploy.bench.cost)",
             "estimates are arithmetic on vendor figures, not measurements on those devices; "
             "1080 Ti FP16 runs at 1/64 rate, so the paper's figures can only be FP32"]
    if {"full", "small"} <= set(variants):
        full, small = report["variants"]["full"], report["variants"]["small"]
        notes.append(f"full ÷ small: {full['cost']['total_flops'] / small['cost']['total_flops']:.2f}× the FLOPs, "
                     f"{full['paper']['ms'] / small['paper']['ms']:.2f}× the paper's time: the small model is far "
                     "from its compute floor, as a 119-layer network of thin tensors is bound by per-layer "
                     "overheads more than by arithmetic")
    for c in report["ceilings"]:
        rates = ", ".join(f"{p} {_tera(r)} T(FL)OP/s" for p, r in c["flops"].items())
        notes.append(f"{c['name']}: {rates}, {c['bandwidth'] / 1e9:.0f} GB/s — {c['source']}")
    return table + "\n\n" + "\n".join(textwrap.fill(n, width, initial_indent="- ", subsequent_indent="  ",
                                                      break_on_hyphens=False) for n in notes)


def _fitted_table(header: list[str], rows: list[list[str]], width: int) -> str:
    """:func:`text_table` with the first column wrapped so that no line is wider than ``width``.

    Value cells keep one trailing space unless they end in a ``*`` mark, so the marks stand outside the
    right-aligned numbers.
    """
    marked = any(c.endswith("*") for r in rows for c in r[1:])
    pad = (lambda c: c if c.endswith("*") or not c else c + " ") if marked else (lambda c: c)
    header = [header[0], *map(pad, header[1:])]
    rows = [[r[0], *map(pad, r[1:])] for r in rows]
    values = sum(2 + max(len(r[i]) for r in [header, *rows]) for i in range(1, len(header)))
    room = max(width - values, 16)
    wrapped: list[list[str]] = []
    for label, *cells in rows:
        indent = " " * (len(label) - len(label.lstrip()) + 2)
        lines = textwrap.wrap(label, room, subsequent_indent=indent, break_on_hyphens=False) or [""]
        wrapped.append([lines[0], *cells])
        wrapped.extend([line, *[""] * len(cells)] for line in lines[1:])
    return text_table(header, wrapped)


def run(size: tuple[int, int] = (320, 320), measure: bool = True, opts: Any = None,
        variants: Sequence[str] = ("full", "small")) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure this machine's ceilings and (unless ``measure`` is off) both variants at batch 1, then check.

    ``opts`` is a :class:`~u2deploy.bench.latency.LatencyOptions`; its batch and size are overridden.
    """
    from dataclasses import replace

    from .latency import LatencyOptions, default_threads, run_latency

    opts = replace(opts or LatencyOptions(), batches=(1,), size=tuple(size), end_to_end=False)
    device = opts.device or "cpu"
    old_threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads or default_threads())
    try:
        local = measure_ceilings(device)
    finally:
        torch.set_num_threads(old_threads)
    results = run_latency([f"torch:{v}" for v in variants], opts) if measure else []
    return {**check(variants, size, results, local), "hardware": describe(opts.threads or default_threads())}, results
