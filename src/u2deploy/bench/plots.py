"""PR and Fβ-threshold curves, one line per labelled result, in the style of the paper's Fig. 6.

matplotlib is an optional extra (``pip install -e '.[plot]'``); it is imported only when a plot
is drawn, with the Agg backend so that no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import U2Error
from ..files import atomic_path, check_writable
from .metrics import BETA2, f_beta


@dataclass(frozen=True)
class PRCurve:
    """Dataset-mean precision and recall at thresholds 0 … 255, under a legend label."""

    label: str
    precision: Sequence[float] | np.ndarray
    recall: Sequence[float] | np.ndarray

    def f_curve(self) -> np.ndarray:
        return f_beta(np.asarray(self.precision, float), np.asarray(self.recall, float), BETA2)

    @property
    def max_f(self) -> float:
        return float(self.f_curve().max())


def pyplot():
    """matplotlib's pyplot on the Agg backend, or a one-line error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise U2Error("plotting needs matplotlib: pip install -e '.[plot]'") from None
    return plt


def check_plot_path(out: str | Path) -> None:
    """Fail before a long evaluation, not after: matplotlib is there, knows the format, the folder takes files."""
    pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if _format(out) not in formats:
        raise U2Error(f"{out}: cannot write a plot in this format (known: {', '.join(sorted(formats))})")
    check_writable(out)


def save_figure(fig, out: str | Path, dpi: int) -> Path:
    """Written atomically, with the user's normal file mode; the figure is closed."""
    plt = pyplot()
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=_format(out), dpi=dpi)
    finally:
        plt.close(fig)
    return out


def _format(out: str | Path) -> str:
    return Path(out).suffix.lstrip(".").lower() or "png"


def plot_pr_curves(curves: Sequence[PRCurve], out: str | Path, title: str | None = None) -> Path:
    """PR curves (left) and Fβ against threshold (right), each labelled with its maxFβ.

    Written atomically; the format follows the file's suffix (``.png``, ``.pdf``, ``.svg``).
    """
    if not curves:
        raise U2Error("no curves to plot")
    check_plot_path(out)
    plt = pyplot()
    out = Path(out)
    fig, (ax_pr, ax_f) = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    thresholds = np.arange(len(curves[0].precision))
    for curve in curves:
        label = f"{curve.label} (maxFβ={curve.max_f:.3f})"
        (line,) = ax_pr.plot(curve.recall, curve.precision, lw=1.6, label=label)
        ax_f.plot(thresholds, curve.f_curve(), lw=1.6, color=line.get_color(), label=label)
    ax_pr.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title="PR curve")
    ax_f.set(xlabel="Threshold", ylabel="Fβ (β²=0.3)", xlim=(0, thresholds[-1]), ylim=(0, 1.02),
             title="Fβ curve")
    for ax in (ax_pr, ax_f):
        ax.grid(alpha=0.3)
    ax_pr.legend(loc="lower left", fontsize="small")
    if title:
        fig.suptitle(title)

    return save_figure(fig, out, dpi=150)
