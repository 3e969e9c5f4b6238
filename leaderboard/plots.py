"""Matplotlib figures for the leaderboard page: meta-task bars with intervals, a heatmap.

Figures are drawn on the Agg canvas directly (no pyplot), so nothing global such as the
user's backend is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmeb.errors import MMEBError
from mmeb.leaderboard.compare import Comparison

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MMEBError("the leaderboard's plots need matplotlib: "
                        "pip install 'mmeb[leaderboard]'") from None

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def aggregate_bars(comparison: Comparison, path: Path) -> Path:
    """One group of bars per aggregate, one bar per model; measured bars carry their
    interval as an error bar, published bars are hatched."""
    rows = comparison.aggregate_rows()
    groups = list(dict.fromkeys(rows["row"]))
    columns = comparison.columns
    figure = _figure(max(6.0, 1.1 * len(groups) * max(1, len(columns)) ** 0.5 + 2), 4.2)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(columns))
    x = np.arange(len(groups))
    for i, column in enumerate(columns):
        mine = rows[rows["column"] == column].set_index("row").reindex(groups)
        values = 100 * mine["value"].astype(float).to_numpy()
        lo = 100 * mine["lo"].astype(float).to_numpy()
        hi = 100 * mine["hi"].astype(float).to_numpy()
        published = column in comparison.published
        err = None if published else np.vstack([np.nan_to_num(values - lo),
                                                  np.nan_to_num(hi - values)])
        axes.bar(x + (i - (len(columns) - 1) / 2) * width, np.nan_to_num(values), width,
                 yerr=err, capsize=2, label=column, hatch="//" if published else None,
                 alpha=0.6 if published else 0.9)
    axes.set_xticks(x, [g if g != "overall" else "overall" for g in groups])
    axes.set_ylabel(f"{comparison.metric} (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"{comparison.suite}: aggregates with "
                   f"{100 * (1 - comparison.settings['alpha']):g}% intervals")
    axes.legend(fontsize="small", ncols=min(3, len(columns)))
    figure.savefig(path)
    return path


def dataset_heatmap(comparison: Comparison, path: Path) -> Path:
    """Datasets x models, the score in each cell."""
    table = comparison.wide().loc[[r for r in comparison.row_order
                                   if r in set(comparison.dataset_rows()["row"])]]
    values = 100 * table.astype(float).to_numpy()
    figure = _figure(2.5 + 1.2 * len(table.columns), 1.2 + 0.28 * len(table.index))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis", vmin=0,
                        vmax=100)
    axes.set_xticks(range(len(table.columns)), list(table.columns), rotation=30, ha="right",
                    fontsize="small")
    axes.set_yticks(range(len(table.index)), list(table.index), fontsize="small")
    for (r, c), value in np.ndenumerate(values):
        if not np.isnan(value):
            axes.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize="x-small",
                      color="white" if value < 60 else "black")
    figure.colorbar(image, ax=axes, label=f"{comparison.metric} (%)")
    figure.savefig(path)
    return path
