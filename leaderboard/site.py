"""The static leaderboard page: one HTML file with its plots and data next to it.

It needs no network: styles and the sorting script are inline, plots are PNG files in
``plots/``, and every table cell carries its exact number in ``data-value``. Clicking a header
sorts by it; ``index.html#sort=<table id>:<column>:<asc|desc>`` sorts on load.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from mmeb.leaderboard.compare import Comparison
from mmeb.leaderboard.formats import (
    NOTE,
    PARTIAL,
    Cell,
    Table,
    build_table,
    html_table,
    is_missing,
    pct,
    to_csv,
    to_json,
)
from mmeb.leaderboard.load import ModelResults
from mmeb.leaderboard.page import page
from mmeb.leaderboard.taskinfo import SUITE_TITLES


def leaderboard_table(comparison: Comparison) -> Table:
    """Models as rows (measured, then published), aggregates as columns."""
    rows = comparison.aggregate_rows()
    groups = list(dict.fromkeys(rows["row"]))
    headers = ["model", "kind", "datasets", *groups]
    body = []
    notes: list[str] = []
    for column in comparison.columns:
        mine = rows[rows["column"] == column].set_index("row")
        if column in comparison.status:
            status = comparison.status[column]
            kind, have = "measured", f"{len(status.tasks)}/{status.expected}"
        else:
            kind, have = "published", ""
        cells = [Cell(column), Cell(kind), Cell(have)]
        for group in groups:
            cell = mine.loc[group]
            text = pct(cell.value)
            if text != "-" and not is_missing(cell.lo):
                text += f" [{pct(cell.lo)}, {pct(cell.hi)}]"
            if text != "-" and bool(cell.partial):
                text += PARTIAL
            if text != "-" and kind == "published" and cell.note:
                text += NOTE
                notes.append(f"{NOTE} {column}, {group}: {cell.note}")
            value = None if text == "-" else float(cell.value)
            cells.append(Cell(text, value))
        body.append(cells)
    footnotes = [f"Sorted by a click on a header. {PARTIAL} over fewer datasets than the "
                 f"aggregate is defined on. Intervals: {comparison.settings['interval']}.",
                 *notes]
    return Table(f"{SUITE_TITLES.get(comparison.suite, comparison.suite)}: leaderboard "
                 f"({comparison.metric}, %)", headers, body, [], footnotes)


def write_site(
    comparisons: Sequence[Comparison], models: Sequence[ModelResults], out: Path
) -> Path:
    """Write ``out/index.html`` with plots, the comparison data and the exports."""
    from mmeb.leaderboard.exports import write_mmeb_submission, write_mteb_results
    from mmeb.leaderboard.plots import aggregate_bars, dataset_heatmap

    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    sections = []
    for comparison in comparisons:
        suite = comparison.suite
        bars = aggregate_bars(comparison, out / "plots" / f"{suite}-aggregates.png")
        heat = dataset_heatmap(comparison, out / "plots" / f"{suite}-datasets.png")
        sections.append(
            f"<section id=\"{suite}\"><h2>{html.escape(SUITE_TITLES.get(suite, suite))}</h2>"
            + html_table(leaderboard_table(comparison), f"leaderboard-{suite}")
            + f'<img src="plots/{bars.name}" alt="aggregate scores per model">'
            + html_table(build_table(comparison), f"datasets-{suite}")
            + f'<img src="plots/{heat.name}" alt="dataset by model heatmap"></section>'
        )
    (out / "data" / "comparison.csv").write_text(to_csv(comparisons), encoding="utf-8")
    (out / "data" / "comparison.json").write_text(to_json(comparisons), encoding="utf-8")
    links = ['<a href="data/comparison.csv">comparison.csv</a>',
             '<a href="data/comparison.json">comparison.json</a>']
    for model in models:
        sub = write_mmeb_submission(model, out / "exports" / "mmeb" / f"{model.name}.json")
        write_mteb_results(model, out / "exports" / "mteb")
        links.append(f'<a href="exports/mmeb/{html.escape(sub.name)}">{html.escape(model.name)}'
                     " (MMEB submission JSON)</a>")
    downloads = "<h2>Data</h2><ul>" + "".join(f"<li>{a}</li>" for a in links) + (
        '<li>mteb-style result files: exports/mteb/</li></ul>')
    index = out / "index.html"
    index.write_text(page("mmeb leaderboard", "\n".join(sections) + downloads), encoding="utf-8")
    return index
