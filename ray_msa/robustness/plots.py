"""Robustness figures: metric-vs-level curves (several models on one axis), and the modality conditions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def level_figure(curves: dict[str, pd.DataFrame], metric: str, title: str) -> Figure:
    """One line per model (`curve` tables: level, mean, std over seeds), a band of one std."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for label, table in curves.items():
        (line,) = ax.plot(table["level"], table["mean"], marker="o", markersize=3, label=label)
        ax.fill_between(
            table["level"],
            table["mean"] - table["std"],
            table["mean"] + table["std"],
            alpha=0.15,
            color=line.get_color(),
        )
    ax.set_xlabel("level (missing rate or noise)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def condition_figure(table: pd.DataFrame, metric: str, title: str) -> Figure:
    """One bar per set of present modalities."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(table), 3.2))
    ax.bar(table["condition"], table["mean"])
    ax.set_ylabel(metric)
    ax.set_xlabel("modalities present")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig
