"""Rendering a comparison: markdown (the terminal's tabulate), CSV, JSON, LaTeX and HTML.

All formats show the same table: one row per dataset, then the aggregates; per measured model
its score with the bootstrap interval, per further model its difference to the first with the
paired test's verdict, and the published columns, which are labelled and never used in a delta.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from mmeb.leaderboard.compare import CELL_COLUMNS, Comparison
from mmeb.leaderboard.page import page
from mmeb.leaderboard.taskinfo import SUITE_TITLES

FORMATS = ("markdown", "csv", "json", "html", "latex")
PARTIAL = "†"  # an aggregate over fewer datasets than it is defined on
NOTE = "‡"  # a published value with a note


@dataclass
class Cell:
    text: str
    value: float | None = None  # what sorting uses (and what the DOM carries)
    significant: bool | None = None


@dataclass
class Table:
    title: str
    headers: list[str]
    body: list[list[Cell]]  # dataset rows
    aggregates: list[list[Cell]]
    footnotes: list[str]


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value: Any) -> str:
    return "-" if is_missing(value) else f"{100 * float(value):.1f}"


def signed(value: Any) -> str:
    return "-" if is_missing(value) else f"{100 * float(value):+.1f}"


def _p(value: float) -> str:
    return "p<0.001" if value < 0.001 else f"p={value:.3f}"


def _row_label(row: Any) -> str:
    if row.row_type == "dataset":
        return str(row.row)
    if row.row_type == "overall":
        return f"overall ({row.n_expected})"
    return f"{row.row} mean ({row.n_expected})"


def build_table(comparison: Comparison, *, details: bool = False) -> Table:
    """The displayed table; ``details`` adds chance level and query counts (one model)."""
    # Grouped from the records, not the frame: `mmeb run` prints this table without pandas.
    groups: dict[str, dict[str, SimpleNamespace]] = {}
    for record in comparison.records:
        cell = SimpleNamespace(**{key: record.get(key) for key in CELL_COLUMNS})
        groups.setdefault(record["row"], {})[record["column"]] = cell
    ref = comparison.reference
    headers = ["dataset", "meta-task", "role"]
    for name in comparison.models:
        status = comparison.status[name]
        suffix = "" if status.complete else (
            f" (incomplete: {len(status.tasks)}/{status.expected})")
        headers.append(f"{name}{suffix}")
        if name != ref:
            headers.append(f"Δ {name} vs {ref}")
    headers.extend(comparison.published)
    if details:
        headers.extend(["chance", "queries"])
    body: list[list[Cell]] = []
    aggregates: list[list[Cell]] = []
    notes: list[str] = []
    for row_name, group in groups.items():
        first = next(iter(group.values()))
        out = [Cell(_row_label(first)), Cell(str(first.meta_task or "")),
               Cell(str(first.role or "") if first.row_type == "dataset" else "")]
        for name in comparison.models:
            cell = group[name]
            out.append(_score_cell(cell))
            if name != ref:
                out.append(_delta_cell(cell))
        for label in comparison.published:
            cell = group[label]
            text = pct(cell.value)
            if first.row_type != "dataset" and cell.note and not is_missing(cell.value):
                text += NOTE
                notes.append(f"{NOTE} {label}, {row_name}: {cell.note}")
            out.append(Cell(text, None if is_missing(cell.value) else float(cell.value)))
        if details:
            if first.row_type == "dataset":
                c = group[ref].chance
                out.append(Cell(pct(c), None if is_missing(c) else float(c)))
                q = group[ref].queries
                out.append(Cell("-" if is_missing(q) else str(int(q)),
                                None if is_missing(q) else float(q)))
            else:
                out.extend([Cell(""), Cell("")])
        (body if first.row_type == "dataset" else aggregates).append(out)
    return Table(_title(comparison), headers, body, aggregates,
                 _footnotes(comparison) + notes)


def _score_cell(cell: Any) -> Cell:
    if is_missing(cell.value):
        return Cell("-")
    text = pct(cell.value)
    if not is_missing(cell.lo):
        text += f" [{pct(cell.lo)}, {pct(cell.hi)}]"
    if bool(cell.partial):
        text += PARTIAL
    return Cell(text, float(cell.value))


def _delta_cell(cell: Any) -> Cell:
    if is_missing(cell.delta):
        return Cell("-")
    text = signed(cell.delta)
    significant = None
    if not is_missing(cell.p_value):
        significant = bool(cell.significant)
        text += f" ({_p(float(cell.p_value))})" if significant else (
            f" (ns, {_p(float(cell.p_value))})")
    return Cell(text, float(cell.delta), significant)


def _title(comparison: Comparison) -> str:
    return f"{SUITE_TITLES.get(comparison.suite, comparison.suite)}: {comparison.metric} (%)"


def _footnotes(comparison: Comparison) -> list[str]:
    s = comparison.settings
    level = f"{100 * (1 - s['alpha']):g}%"
    lines = [f"[lo, hi]: {level} bootstrap interval over queries ({s['resamples']} resamples, "
             f"seed {s['seed']})."]
    if len(comparison.models) > 1:
        lines.append(f"Δ: points vs {comparison.reference}; p: paired sign-flip permutation "
                     f"test on per-query outcomes ({s['resamples']} permutations); ns: not "
                     f"significant at {s['alpha']:g}.")
    for status in comparison.status.values():
        if not status.complete:
            shown = ", ".join(status.missing[:6]) + (", ..." if len(status.missing) > 6 else "")
            lines.append(f"{PARTIAL} {status.name}: mean over the datasets it has "
                         f"({len(status.tasks)} of {status.expected}; missing {shown}).")
    if comparison.published:
        lines.append("(published): numbers as published, never measured here; see "
                     "docs/leaderboard.md for sources.")
    return lines + comparison.notes


def _plain_rows(table: Table) -> list[list[str]]:
    return [[c.text for c in r] for r in (*table.body, *table.aggregates)]


def to_markdown(comparisons: Sequence[Comparison], *, details: bool = False) -> str:
    from tabulate import tabulate

    parts = []
    for comparison in comparisons:
        table = build_table(comparison, details=details)
        grid = tabulate(_plain_rows(table), headers=table.headers, tablefmt="github",
                        disable_numparse=True)
        parts.append(f"### {table.title}\n\n{grid}\n\n" + "\n".join(table.footnotes))
    return "\n\n".join(parts)


def to_csv(comparisons: Sequence[Comparison]) -> str:
    import pandas as pd

    frame = pd.concat([c.cells for c in comparisons], ignore_index=True)
    return str(frame.to_csv(index=False, lineterminator="\n"))


def _jsonable(value: Any) -> Any:
    if is_missing(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def to_json(comparisons: Sequence[Comparison]) -> str:
    out = []
    for comparison in comparisons:
        records = [{k: _jsonable(v) for k, v in rec.items()}
                   for rec in comparison.cells.to_dict(orient="records")]
        out.append({
            "suite": comparison.suite, "metric": comparison.metric,
            "models": comparison.models, "reference": comparison.reference,
            "published": comparison.published,
            "status": {n: {"tasks": s.tasks, "expected": s.expected, "missing": s.missing,
                           "complete": s.complete, "without_outcomes": s.without_outcomes}
                       for n, s in comparison.status.items()},
            "settings": comparison.settings,
            "notes": comparison.notes,
            "cells": records,
        })
    return json.dumps({"comparisons": out}, indent=2, ensure_ascii=False)


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\\": r"\textbackslash{}", "Δ": r"$\Delta$", "†": r"$^\dagger$",
                  "‡": r"$^\ddagger$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(comparisons: Sequence[Comparison], *, details: bool = False) -> str:
    parts = []
    for comparison in comparisons:
        table = build_table(comparison, details=details)
        spec = "lll" + "r" * (len(table.headers) - 3)
        lines = [f"% {latex_escape(table.title)}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
                 " & ".join(latex_escape(h) for h in table.headers) + r" \\", r"\midrule"]

        def render(row: list[Cell]) -> str:
            texts = []
            for cell in row:
                text = latex_escape(cell.text)
                if cell.significant:
                    number, _, rest = cell.text.partition(" ")
                    text = f"\\textbf{{{latex_escape(number)}}}"
                    text += f" {latex_escape(rest)}" if rest else ""
                texts.append(text)
            return " & ".join(texts) + r" \\"

        lines += [render(r) for r in table.body]
        if table.aggregates:
            lines.append(r"\midrule")
            lines += [render(r) for r in table.aggregates]
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {latex_escape(f)}" for f in table.footnotes]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def html_table(table: Table, table_id: str) -> str:
    """A sortable table: every cell carries its number in ``data-value``."""
    head = "".join(f'<th data-col="{i}">{html.escape(h)}</th>'
                   for i, h in enumerate(table.headers))

    def row(cells: list[Cell]) -> str:
        tds = []
        for cell in cells:
            attrs = "" if cell.value is None else f' data-value="{cell.value!r}"'
            if cell.significant is not None:
                attrs += f' class="{"sig" if cell.significant else "ns"}"'
            tds.append(f"<td{attrs}>{html.escape(cell.text)}</td>")
        return "<tr>" + "".join(tds) + "</tr>"

    bodies = [f"<tbody>{''.join(row(r) for r in table.body)}</tbody>"]
    if table.aggregates:
        bodies.append(f'<tbody class="aggregates">{"".join(row(r) for r in table.aggregates)}'
                      "</tbody>")
    notes = "".join(f"<li>{html.escape(f)}</li>" for f in table.footnotes)
    return (f'<table class="sortable" id="{html.escape(table_id)}"><caption>'
            f"{html.escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
            f"{''.join(bodies)}</table><ul class=\"notes\">{notes}</ul>")


def to_html(comparisons: Sequence[Comparison], *, details: bool = False) -> str:
    tables = [html_table(build_table(c, details=details), f"compare-{c.suite}")
              for c in comparisons]
    return page("mmeb comparison", "\n".join(tables))


def render(comparisons: Sequence[Comparison], fmt: str, *, details: bool = False) -> str:
    if fmt == "markdown":
        return to_markdown(comparisons, details=details)
    if fmt == "csv":
        return to_csv(comparisons)
    if fmt == "json":
        return to_json(comparisons)
    if fmt == "latex":
        return to_latex(comparisons, details=details)
    if fmt == "html":
        return to_html(comparisons, details=details)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
