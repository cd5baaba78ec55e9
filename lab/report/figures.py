"""The report's PNG plots (matplotlib, headless). Each takes plain tables and a path."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def grouped_bars(path: Path, groups: list[str], series: dict[str, list[float | None]], ylabel: str,
                 title: str, panels: dict[str, dict[str, list[float | None]]] | None = None) -> Path:
    """Bars per group, one colour per series; `panels` draws several such charts side by side."""
    panels = panels or {title: series}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False, sharey=True)
    for ax, (panel_title, panel) in zip(axes[0], panels.items()):
        width = 0.8 / max(len(panel), 1)
        x = np.arange(len(groups))
        for i, (label, values) in enumerate(panel.items()):
            heights = [np.nan if v is None else v for v in values]
            ax.bar(x + (i - (len(panel) - 1) / 2) * width, heights, width, label=label)
        ax.set_xticks(x, groups, rotation=20, ha="right")
        ax.set_title(panel_title)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str) -> Path:
    """Lines of (x, y) points on log-log axes, e.g. parameters against samples/s."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, points in series.items():
        points = sorted(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tradeoff(path: Path, curves: dict[str, list[tuple[str, float, float]]], points: dict[str, tuple[float, float]],
             title: str) -> Path:
    """New-target against warm-target NDCG@10: labelled curves (a knob's values) and single models as points."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (curve_label, curve), color in zip(curves.items(), ("black", "tab:red", "tab:blue")):
        ax.plot([c[1] for c in curve], [c[2] for c in curve], marker="o", color=color, label=curve_label)
        for text, x, y in curve:
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    for i, (label, (x, y)) in enumerate(points.items()):
        ax.scatter([x], [y], marker="sxD^v<>p*h"[i % 10], s=40, label=label)
    ax.set_xlabel("NDCG@10, warm targets")
    ax.set_ylabel("NDCG@10, new-item targets")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
