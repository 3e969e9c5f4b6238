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
from mmeb.leaderboard.taskinfo import SUITE_TITLES

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
caption{text-align:left;font-weight:bold;padding:0.3em 0}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right;white-space:nowrap}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
td:first-child,th:first-child{text-align:left}
tbody.aggregates{border-top:3px solid #888;font-weight:600}
td.sig{background:#e4f5e4} td.ns{color:#888}
ul.notes{font-size:0.85em;color:#555}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
"""

_SCRIPT = """
function cellKey(cell){
  if(!cell) return null;
  const v = cell.getAttribute('data-value');
  if(v !== null) return parseFloat(v);
  const t = cell.textContent.trim();
  return (t === '' || t === '-') ? null : t;
}
function sortTable(table, col, descending){
  for(const body of table.tBodies){
    const rows = Array.from(body.rows);
    rows.sort(function(a, b){
      const x = cellKey(a.cells[col]), y = cellKey(b.cells[col]);
      if(x === null && y === null) return 0;
      if(x === null) return 1;
      if(y === null) return -1;
      const order = (typeof x === 'number' && typeof y === 'number') ? x - y
                    : String(x).localeCompare(String(y));
      return descending ? -order : order;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  table.querySelectorAll('th').forEach(function(th){ th.removeAttribute('aria-sort'); });
  table.tHead.rows[0].cells[col].setAttribute('aria-sort', descending ? 'descending' : 'ascending');
}
document.querySelectorAll('table.sortable').forEach(function(table){
  table.tHead.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      sortTable(table, col, th.getAttribute('aria-sort') !== 'descending');
    });
  });
});
const wanted = /^#sort=([^:]+):(\\d+):(asc|desc)$/.exec(decodeURIComponent(location.hash));
if(wanted){
  const table = document.getElementById(wanted[1]);
  if(table) sortTable(table, parseInt(wanted[2], 10), wanted[3] === 'desc');
}
"""


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>"
            f"<h1>{html.escape(title)}</h1>\n{body}\n<script>{_SCRIPT}</script></body></html>\n")


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
