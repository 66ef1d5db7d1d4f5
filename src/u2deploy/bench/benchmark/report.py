"""How a benchmark reads: the text table and the ship line on stdout, and ``--report``: one Markdown file
with the same table, the PR curves and a latency plot beside it, the hardware and every command."""

from __future__ import annotations

from pathlib import Path

from ... import hardware
from ...files import atomic_path, check_destinations
from ...formats import by_key
from ...plural import plural
from ..plots import check_plot_path, plot_pr_curves, pyplot, save_figure
from ..report import markdown_table, text_table
from ..stats import format_ms
from .result import BenchmarkResult
from .rows import Row

HEADER = ("artifact", "format", "precision", "size MB", "ΔmaxFβ", "ΔMAE", "map mean|Δ|", "pass", "p50 ms",
          "× FP32 ONNX (min–max)", "e2e p50 ms", "e2e × (min–max)", "peak RSS MiB")


def _ratio_cell(ratio: float | None, lo: float | None, hi: float | None) -> str:
    if ratio is None:
        return "–"
    return f"{ratio:.3f}× ({lo:.2f}–{hi:.2f})" if lo is not None and hi is not None else f"{ratio:.3f}×"


def _label(row: Row) -> str:
    """The artifact's file name; the reference's ``torch:VARIANT``."""
    if row.artifact and not row.reference:
        return Path(row.artifact).name
    return row.artifact or row.name


def cells(row: Row) -> list[str]:
    """One table line."""
    ref = row.reference
    fmt = by_key(row.format)

    def delta(x: float | None, digits: int = 4) -> str:
        return "ref" if ref else "–" if x is None else f"{x:+.{digits}f}"

    return [_label(row), fmt.name if row.backend in (fmt.backends[0], "torch") else f"{fmt.name} ({row.backend})",
            row.precision, f"{row.size_bytes / 1e6:.2f}" if row.size_bytes else "–", delta(row.delta_maxF),
            delta(row.delta_mae), "ref" if ref else "–" if row.map_mean_abs is None else f"{row.map_mean_abs:.1e}",
            "ref" if ref else "✅" if row.passed else "❌" if row.passed is False else "–",
            format_ms(row.latency_ms_p50) if row.latency_ms_p50 is not None else "–",
            _ratio_cell(row.ratio, row.ratio_min, row.ratio_max),
            format_ms(row.e2e_ms_p50) if row.e2e_ms_p50 is not None else "–",
            _ratio_cell(row.e2e_ratio, row.e2e_ratio_min, row.e2e_ratio_max),
            f"{row.peak_rss_bytes / 2**20:.0f}" if row.peak_rss_bytes else "–"]


def _measured_on(result: BenchmarkResult, row: Row) -> str:
    if row.device == "cuda" and result.hardware.get("gpu"):
        return f"{result.hardware['gpu']['name']} (host {hardware.isa_line(result.hardware['cpu'])})"
    return f"{hardware.isa_line(result.hardware['cpu'])}, {plural(result.hardware.get('threads_used'), 'thread')}"


def ship_line(result: BenchmarkResult) -> str:
    """The one line that names the artifact to ship, why, where it was measured and how to rebuild it."""
    best = result.recommended
    if best is None:
        return ("**ship nothing** — no artifact passed its gate (❌ above): fix the artifact, or widen "
                "--max-delta-maxf/--max-delta-mae deliberately")
    base = result.baseline
    assert best.ratio is not None and best.latency_ms_p50 is not None
    speed = (f"the FP32 ONNX baseline itself ({best.latency_ms_p50:.1f} ms p50)" if best is base else
             f"speed-up {1 / best.ratio:.2f}× over FP32 ONNX (time ratio {best.ratio:.3f}, "
             f"{best.ratio_min:.3f}–{best.ratio_max:.3f} over {best.rounds} rounds; p50 {best.latency_ms_p50:.1f} ms "
             f"vs {base.latency_ms_p50:.1f} ms)")
    if best.e2e_ratio is not None and best is not base:
        speed += f", end to end {1 / best.e2e_ratio:.2f}× (ratio {best.e2e_ratio:.3f})"
    limits = best.limits or {}
    accuracy = (f"ΔmaxFβ {best.delta_maxF:+.4f}, ΔMAE {best.delta_mae:+.4f}, map mean|Δ| {best.map_mean_abs:.4f} "
                f"vs PyTorch FP32 (bounds {limits.get('delta_maxF'):g}, {limits.get('delta_mae'):g}, "
                f"{limits.get('map_mean_abs'):g})")
    return (f"**ship {best.artifact}** ({by_key(best.format).name} {best.precision} on {best.backend}) — {speed}; "
            f"{accuracy}; measured on {_measured_on(result, best)}; rebuild: {best.build_command}")


def _lines_below(result: BenchmarkResult) -> list[str]:
    lines = [f"⏭ {r.name}: {r.status}" for r in result.rows if r.skipped]
    lines += [f"❌ {r.name} ({Path(r.artifact).name if r.artifact else '-'}): {r.status.removeprefix('failed: ')}"
              for r in result.rows if r.passed is False]
    return lines + list(result.notes)


def _caption(result: BenchmarkResult) -> str:
    model = result.timing.get("model", {})
    return (f"{result.dataset}: {plural(result.n_images, 'image')} at {result.size[0]}×{result.size[1]} · "
            "gate: u2bench parity vs PyTorch FP32 at each precision's tolerance · timing: paired, batch 1, "
            f"{plural(model.get('threads'), 'thread')}, {plural(model.get('rounds'), 'round')}; "
            "ratios are time / FP32 ONNX per round (median, min–max)")


def render_text(result: BenchmarkResult) -> str:
    rows = [cells(r) for r in result.rows if not r.skipped]
    return "\n".join([_caption(result), text_table(HEADER, rows), *_lines_below(result),
                      f"on: {hardware.one_line(result.hardware)}", ship_line(result)])


def _timing_line(result: BenchmarkResult) -> str:
    s = result.seconds
    cached = [r.name for r in result.rows if r.cached]
    stages = (("build", "build"), ("parity", "parity"), ("timing_model", "model timing"),
              ("timing_end_to_end", "end-to-end timing"), ("peak_rss", "peak RSS"))
    parts = [f"{name} {s[key]:.0f} s" for key, name in stages if key in s]
    return (f"Wall time {s['total']:.0f} s: " + ", ".join(parts)
            + (f" (reused from {result.out}: {', '.join(cached)})" if cached else ""))


def plot_benchmark_latency(result: BenchmarkResult, path: str | Path) -> Path:
    """Time relative to FP32 ONNX per artifact (bar: median of the per-round ratios, whisker: min–max),
    model only and end to end; green passed its gate, red failed, grey the PyTorch reference."""
    check_plot_path(path)
    plt = pyplot()
    import matplotlib.ticker
    rows = [r for r in result.rows if r.ratio is not None]
    panels = [("model only", "ratio", "ratio_min", "ratio_max", "latency_ms_p50")]
    if any(r.e2e_ratio is not None for r in rows):
        panels.append(("end to end", "e2e_ratio", "e2e_ratio_min", "e2e_ratio_max", "e2e_ms_p50"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 0.5 * len(rows) + 1.8), squeeze=False)
    colors = ["0.6" if r.reference else "tab:green" if r.passed else "tab:red" for r in rows]
    for ax, (title, key, lo, hi, ms) in zip(axes[0], panels, strict=True):
        values = [getattr(r, key) or 0.0 for r in rows]
        err = [[max(0.0, v - (getattr(r, lo) or v)) for v, r in zip(values, rows, strict=True)],
               [max(0.0, (getattr(r, hi) or v) - v) for v, r in zip(values, rows, strict=True)]]
        ys = range(len(rows))
        ax.barh(list(ys), values, color=colors, xerr=err, capsize=3)
        ax.set_xscale("log", base=2)
        for y, value, row in zip(ys, values, rows, strict=True):
            if getattr(row, ms) is not None:
                ax.text(max(value, getattr(row, hi) or value) * 1.06, y, f"{getattr(row, ms):.1f} ms", va="center",
                        fontsize=7)
        ax.set_xlim(min(0.5, *[getattr(r, lo) or 1.0 for r in rows]) / 1.3,
                    max(2.0, *[getattr(r, hi) or 1.0 for r in rows]) * 2.2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_yticks(list(ys), [_label(r) for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("time / FP32 ONNX (median of rounds; whisker min–max)", fontsize=8)
        ax.set_title(f"{title}, batch 1, {result.size[0]}×{result.size[1]}", fontsize=10)
    fig.text(0.01, 0.01, hardware.one_line(result.hardware)[:170], fontsize=6, alpha=0.7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, path, dpi=120)


def report_paths(report: Path) -> tuple[Path, Path]:
    """The PNGs beside a Markdown report: PR curves and latency."""
    return report.with_name(f"{report.stem}_pr.png"), report.with_name(f"{report.stem}_latency.png")


def check_report(report: Path) -> None:
    """Refuse an unwritable ``--report`` (or its PNGs) before any work, as every output destination is."""
    check_destinations(report)
    for png in report_paths(report):
        check_plot_path(png)


def write_report(result: BenchmarkResult, report: Path) -> Path:
    """One Markdown file with the table, the PR curves and latency plot beside it, the hardware and commands."""
    pr_png, latency_png = report_paths(report)
    figures = []
    if result.curves:
        plot_pr_curves(result.curves, pr_png, title=f"{result.dataset}, n={result.n_images}, "
                                                    f"{result.size[0]}×{result.size[1]}")
        figures.append(f"![PR and Fβ curves of every artifact over the PyTorch reference]({pr_png.name})")
    plot_benchmark_latency(result, latency_png)
    figures.append(f"![time relative to FP32 ONNX, model only and end to end]({latency_png.name})")
    rows = [[c.replace("|", "\\|") for c in cells(r)] for r in result.rows if not r.skipped]
    header = [h.replace("|", "\\|") for h in HEADER]
    gated = [r for r in result.rows if r.artifact and not r.reference and not r.skipped]
    commands = [result.command, "", "# each artifact, as the benchmark built it:"]
    commands += [r.build_command.split(" && ")[-1] for r in gated if r.build_command]
    commands += ["", "# the same gate and timing, one command each:", *result.step_commands]
    variant = "U²-Net† (small)" if result.reference.artifact == "torch:small" else "U²-Net (full)"
    lines = [f"# u2bench benchmark: {variant} at {result.size[0]}×{result.size[1]}", "",
             f"Measured on {hardware.one_line(result.hardware)}.", "", _caption(result) + ".", "",
             markdown_table(header, rows), "", *[f"- {line}" for line in _lines_below(result)], "",
             ship_line(result), "", *[f"{f}\n" for f in figures], _timing_line(result) + ".", "",
             "## Commands", "", "```bash", *commands, "```", ""]
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines))
    return report
