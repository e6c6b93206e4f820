"""PNG charts for docs/benchmarks.md: every benchmark draws its figures through these two functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.axes import Axes
from matplotlib.figure import Figure

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "img"


def lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    log_y: bool = False,
) -> Path:
    """One line per series (name → (xs, ys)), markers on the measured points."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    _finish(fig, ax, title, xlabel, ylabel, log_y)
    return _save(fig, path)


def bars(path: Path, title: str, ylabel: str, values: Mapping[str, float], *, log_y: bool = False) -> Path:
    """One labelled bar per value, the figure printed on top of each bar."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    names = list(values)
    drawn = ax.bar(names, [values[n] for n in names], color="tab:blue")
    ax.bar_label(drawn, labels=[f"{values[n]:,.0f}" for n in names])
    _finish(fig, ax, title, None, ylabel, log_y)
    return _save(fig, path)


def _finish(fig: Figure, ax: Axes, title: str, xlabel: str | None, ylabel: str, log_y: bool) -> None:
    ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
