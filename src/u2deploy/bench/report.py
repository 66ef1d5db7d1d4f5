"""Rendering results for people and files: aligned text, Markdown, atomic JSON, and a latency plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..hardware import one_line
from ..text import Row, text_table
from .stats import format_ms


def markdown_table(header: Row, rows: Sequence[Row]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in [header, align, *rows])


def label(result: dict[str, Any]) -> str:
    """Artifact, backend and the options that change speed, in one short string."""
    opts = result.get("options") or {}
    extras = [k.replace("_", "-") for k in ("channels_last", "cuda_graphs", "compile") if opts.get(k)]
    if opts.get("tf32") is False and opts.get("tf32_applies"):
        extras.append("no-tf32")
    if opts.get("hint") == "throughput":
        extras.append("throughput-hint")
    name = Path(result["model"]).name if not result["model"].startswith("torch:") else result["model"]
    where = result["backend"] + ("" if result["device"] == "cpu" else f"/{result['device']}")
    return " ".join([name, where, result["precision"], *extras])


LATENCY_HEADER = ("artifact", "batch", "size", "n", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "img/s",
                  "FPS", "CPU-time p50 ms", "peak RSS MiB")


def latency_row(r: dict[str, Any]) -> list[str]:
    lat = r["latency_ms"]
    std = f" ± {format_ms(lat['std'])}" if lat["std"] is not None else ""
    return [label(r), str(r["batch"]), "x".join(map(str, r["size"])), str(lat["n"]),
            format_ms(lat["p50"], 50), format_ms(lat["p90"], 90), format_ms(lat["p99"], 99),
            format_ms(lat["mean"]) + std, f"{r['throughput_ips']:.1f}", f"{r['fps']:.2f}",
            format_ms(r["cpu_time_ms"]["p50"]), str(r["memory"].get("host_peak_rss_mib", "?"))]


def latency_text(results: Sequence[dict[str, Any]]) -> str:
    """The terminal report: host latency, then device time and memory where a GPU was used."""
    parts = [text_table(LATENCY_HEADER, [latency_row(r) for r in results])]
    gpu_rows = [[label(r), str(r["batch"]), format_ms(r["device_ms"]["p50"], 50),
                 format_ms(r["device_ms"]["p90"], 90), format_ms(r["device_ms"]["p99"], 99),
                 str(r["memory"].get("device_peak_mib", r["memory"].get("device_used_mib", "?")))]
                for r in results if r.get("device_ms")]
    if gpu_rows:
        parts.append("device time (CUDA events):\n" + text_table(
            ("artifact", "batch", "p50 ms", "p90 ms", "p99 ms", "device MiB"), gpu_rows))
    stage_rows = [[label(r), str(r["batch"]), *(format_ms(v) for v in r["stages_ms"].values())]
                  for r in results if r.get("stages_ms")]
    if stage_rows:
        stages = next(r["stages_ms"] for r in results if r.get("stages_ms"))
        parts.append("end-to-end stages, mean ms:\n" + text_table(("artifact", "batch", *stages), stage_rows))
    first = results[0]
    timed = dict.fromkeys(f"{r['backend']}: {r['timed']}" for r in results)
    parts.append(f"timed: {'; '.join(timed)}\nhost latency = call to result ready; CPU time = process CPU "
                 f"time per call, all threads; memory: {first['memory']['host_method']}")
    parts.append(f"on: {one_line(first['hardware'])}")
    return "\n\n".join(parts)


PAIRED_HEADER = ("artifact", "median ms", "vs first", "spread", "rounds")


def paired_text(results: Sequence[dict[str, Any]]) -> str:
    """The ``--paired`` report: each artifact's time relative to the first, then the run's conditions."""
    rows = [[label(r), format_ms(r["median_ms"]), f"{r['ratio']:.3f}×",
             f"{r['ratio_min']:.3f}–{r['ratio_max']:.3f}×", str(r["rounds"])] for r in results]
    first = results[0]
    k = first["calls_per_round"]

    def load(key: str) -> str:
        return f"{first[key][0]:.2f}" if first.get(key) else "?"

    footer = (f"baseline: {label(first)}; threads {first['threads']}; size {'x'.join(map(str, first['size']))}, "
              f"batch {first['batch']}; {k} call{'s' if k != 1 else ''} per model per round; "
              f"load average {load('load_average_start')} → {load('load_average_end')}")
    return text_table(PAIRED_HEADER, rows) + "\n" + footer



def plot_latency(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Grouped bars: one group per batch size, one bar per artifact; bar = p50, whisker up to p90."""
    from .plots import check_plot_path, pyplot, save_figure

    check_plot_path(path)
    plt = pyplot()
    labels = list(dict.fromkeys(label(r) for r in results))
    batches = sorted({r["batch"] for r in results})
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(batches) * len(labels) ** 0.5), 4.5))
    for i, name in enumerate(labels):
        xs, p50s, up = [], [], []
        for j, b in enumerate(batches):
            match = [r for r in results if label(r) == name and r["batch"] == b]
            if not match:
                continue
            lat = match[0]["latency_ms"]
            xs.append(j + (i - (len(labels) - 1) / 2) * width)
            p50s.append(lat["p50"])
            up.append(max(0.0, (lat["p90"] if lat["p90"] is not None else lat["p50"]) - lat["p50"]))
        ax.bar(xs, p50s, width * 0.9, label=name, yerr=[[0] * len(up), up], capsize=3)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("latency per batch, ms (bar p50, whisker p90)")
    size = "x".join(map(str, results[0]["size"]))
    ax.set_title(f"U²-Net latency at {size}", fontsize=11)
    fig.text(0.01, 0.01, one_line(results[0]["hardware"])[:160], fontsize=6, alpha=0.7)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save_figure(fig, path, dpi=120)
