"""The comparison: per-dataset and aggregate scores of several models side by side, with
bootstrap intervals, paired tests against the first model, and published rows beside them.

The result is a long pandas DataFrame (one row per table cell) that every output format and
the HTML page render; ``Comparison.wide()`` pivots it to dataset x model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from mmeb.errors import ResultsError
from mmeb.leaderboard.load import ModelResults
from mmeb.leaderboard.published import PublishedRow, match_published, select_published
from mmeb.leaderboard.stats import (
    DEFAULT_ALPHA,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_indices,
    bootstrap_means,
    percentile_interval,
    sign_flip_null,
    sign_flips,
    two_sided_p,
)
from mmeb.leaderboard.taskinfo import (
    SUITES,
    TaskInfo,
    aggregate_groups,
    in_group,
    suite_tasks,
)
from mmeb.metrics import MAIN_METRIC, METRIC_NAMES, per_query_metrics

if TYPE_CHECKING:
    import pandas as pd

CELL_COLUMNS = [
    "suite", "row", "row_type", "meta_task", "role", "column", "kind", "value", "lo", "hi",
    "n_datasets", "n_expected", "partial", "queries", "chance", "delta", "delta_lo", "delta_hi",
    "p_value", "significant", "note",
]


@dataclass
class ModelStatus:
    """How much of a suite one measured model covers."""

    name: str
    tasks: list[str]
    expected: int
    missing: list[str]
    without_outcomes: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class Comparison:
    suite: str
    metric: str
    models: list[str]  # measured models; the first is the reference of every delta
    published: list[str]  # labels of the published columns
    records: list[dict[str, Any]]  # one per table cell (keys of CELL_COLUMNS; absent = none)
    status: dict[str, ModelStatus]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return self.models[0]

    @property
    def columns(self) -> list[str]:
        return [*self.models, *self.published]

    @cached_property
    def cells(self) -> pd.DataFrame:
        """The records as a long frame (pandas is imported only here: the plain-text table of
        ``mmeb run`` reads the records)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records, columns=CELL_COLUMNS)

    @property
    def row_order(self) -> list[str]:
        return list(dict.fromkeys(record["row"] for record in self.records))

    def wide(self, value: str = "value") -> pd.DataFrame:
        """Rows (datasets, then aggregates) x columns (measured, then published)."""
        table = self.cells.pivot(index="row", columns="column", values=value)
        return table.reindex(index=self.row_order, columns=self.columns)

    def dataset_rows(self) -> pd.DataFrame:
        return self.cells[self.cells["row_type"] == "dataset"]

    def aggregate_rows(self) -> pd.DataFrame:
        return self.cells[self.cells["row_type"] != "dataset"]


@dataclass
class _Measured:
    """Per-query values and bootstrap draws of one model on one task."""

    value: float
    queries: int | None = None
    per_query: np.ndarray | None = None
    draws: np.ndarray | None = None
    data_id: str | None = None
    chance: float | None = None


def compare(
    models: Sequence[ModelResults],
    *,
    metric: str = MAIN_METRIC,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    alpha: float = DEFAULT_ALPHA,
    published: Sequence[str] = (),
    auto_published: bool = True,
    tasks: Sequence[str] | None = None,
) -> list[Comparison]:
    """One comparison per suite found in the results (MMEB, sample suite, ...)."""
    if not models:
        raise ResultsError("no models to compare")
    if metric not in METRIC_NAMES:
        raise ResultsError(f"unknown metric {metric!r}; choose from {', '.join(METRIC_NAMES)}")
    if resamples < 10:
        raise ResultsError(f"--resamples {resamples} is too few for an interval; use 1000")
    wanted = set(tasks) if tasks else None
    by_suite: dict[str, dict[str, TaskInfo]] = {}
    for model in models:
        for task in model.documents:
            if wanted is None or task in wanted:
                info = model.info(task)
                by_suite.setdefault(info.suite, {})[task] = info
    if not by_suite:
        raise ResultsError("none of the selected tasks has results; check --tasks / --split")
    explicit = select_published(published)
    out = []
    for suite in [*SUITES, "other"]:
        if suite in by_suite:
            rows = list(explicit)
            if auto_published and suite == "eval":
                for model in models:
                    name = match_published(model.config, model.fingerprint)
                    if name is not None:
                        rows.extend(select_published([name]))
            unique = list({r.name: r for r in rows}.values()) if suite == "eval" else []
            out.append(_compare_suite(suite, by_suite[suite], models, metric, resamples, seed,
                                      alpha, unique, wanted))
    return out


@dataclass
class _Draws:
    resamples: int
    seed: int
    alpha: float


def _compare_suite(
    suite: str,
    found: dict[str, TaskInfo],
    models: Sequence[ModelResults],
    metric: str,
    resamples: int,
    seed: int,
    alpha: float,
    published: list[PublishedRow],
    wanted: set[str] | None,
) -> Comparison:
    # With a task selection, completeness and aggregates are relative to the selection.
    expected = [t for t in suite_tasks(suite) if wanted is None or t.name in wanted] or sorted(
        found.values(), key=lambda t: t.name)
    shown = [t for t in expected if t.name in found]
    measured: dict[str, dict[str, _Measured]] = {m.name: {} for m in models}
    for model in models:
        for info in shown:
            if info.name in model.documents:
                measured[model.name][info.name] = _measure(model, info.name, metric)
    _draw(shown, measured, resamples, seed)
    builder = _SuiteCells(suite, metric, measured, published, _Draws(resamples, seed, alpha))
    for info in shown:
        builder.dataset(info)
    for group, kind in aggregate_groups():
        builder.aggregate(group, kind, [t.name for t in expected if in_group(t, group, kind)])
    records = [{**cell, "partial": bool(cell.get("partial", False))} for cell in builder.cells]
    names = list(measured)
    status = {n: _status(n, measured[n], expected) for n in names}
    settings = {"metric": metric, "resamples": resamples, "seed": seed, "alpha": alpha,
                "interval": f"{100 * (1 - alpha):g}% percentile bootstrap over queries",
                "test": "paired sign-flip permutation test on per-query outcomes"}
    return Comparison(suite, metric, names, [r.label for r in published], records, status,
                      settings, _notes(status))


class _SuiteCells:
    """Builds the cell records of one suite: datasets first (which also yields each pair's
    per-dataset null distributions), then the aggregates that reuse them."""

    def __init__(self, suite: str, metric: str, measured: dict[str, dict[str, _Measured]],
                 published: list[PublishedRow], draws: _Draws) -> None:
        self.suite, self.metric, self.measured = suite, metric, measured
        self.published, self.draws = published, draws
        self.names = list(measured)
        self.reference = self.names[0]
        self.nulls: dict[str, dict[str, np.ndarray]] = {n: {} for n in self.names[1:]}
        self.cells: list[dict[str, Any]] = []

    def dataset(self, info: TaskInfo) -> None:
        base = {"suite": self.suite, "row": info.name, "row_type": "dataset",
                "meta_task": info.meta_task, "role": info.role, "n_datasets": 1,
                "n_expected": 1, "partial": False}
        ref = self.measured[self.reference].get(info.name)
        flips: dict[int, np.ndarray] = {}  # one draw per query count, shared by all pairs
        for name in self.names:
            mine = self.measured[name].get(info.name)
            cell = {**base, "column": name, "kind": "measured"}
            if mine is not None:
                cell.update(value=mine.value, queries=mine.queries, chance=mine.chance,
                            **_interval(mine.draws, self.draws.alpha))
                if name != self.reference and ref is not None:
                    cell.update(delta=mine.value - ref.value)
                    if _paired(ref, mine):
                        assert mine.per_query is not None
                        assert ref.per_query is not None
                        rows = len(mine.per_query)
                        if rows not in flips:
                            flips[rows] = sign_flips(rows, self.draws.resamples,
                                                     self.draws.seed, info.name)
                        null = sign_flip_null(mine.per_query - ref.per_query, flips[rows])
                        self.nulls[name][info.name] = null
                        cell.update(_delta_fields(mine, ref, null, self.draws.alpha))
            self.cells.append(cell)
        for row in self.published:
            value = row.dataset_score(info.name, self.metric)
            self.cells.append({**base, "column": row.label, "kind": "published",
                               "value": value, "note": row.source if value is not None else ""})

    def aggregate(self, group: str, kind: str, members: list[str]) -> None:
        if not members:
            return
        has_any = any(t in self.measured[n] for n in self.names for t in members)
        if not has_any and all(r.aggregate(group, self.metric)[0] is None
                               for r in self.published):
            return  # nobody has a number for it: no empty row
        base = {"suite": self.suite, "row": group, "row_type": kind, "meta_task": "",
                "role": group if kind == "role" else "", "n_expected": len(members)}
        ref_have = [t for t in members if t in self.measured[self.reference]]
        for name in self.names:
            have = [t for t in members if t in self.measured[name]]
            cell = {**base, "column": name, "kind": "measured", "n_datasets": len(have),
                    "partial": len(have) < len(members)}
            if have:
                cell.update(self._aggregate_values(name, have, ref_have))
            self.cells.append(cell)
        for row in self.published:
            value, note = row.aggregate(group, self.metric)
            self.cells.append({**base, "column": row.label, "kind": "published",
                               "value": value, "partial": False, "note": note,
                               "n_datasets": len(members) if value is not None else 0})

    def _aggregate_values(self, name: str, have: list[str], ref_have: list[str]
                          ) -> dict[str, Any]:
        alpha = self.draws.alpha
        parts = [self.measured[name][t] for t in have]
        value = float(np.mean([p.value for p in parts]))
        draws = _mean_draws(parts)
        out: dict[str, Any] = {"value": value, **_interval(draws, alpha)}
        # A difference only between aggregates over the same datasets.
        if name == self.reference or have != ref_have:
            return out
        refs = [self.measured[self.reference][t] for t in have]
        out["delta"] = value - float(np.mean([r.value for r in refs]))
        ref_draws = _mean_draws(refs)
        if all(t in self.nulls[name] for t in have) and draws is not None and (
                ref_draws is not None):
            null = np.mean([self.nulls[name][t] for t in have], axis=0)
            lo, hi = percentile_interval(draws - ref_draws, alpha)
            p = two_sided_p(out["delta"], null)
            out.update(delta_lo=lo, delta_hi=hi, p_value=p, significant=p < alpha)
        return out


def _measure(model: ModelResults, task: str, metric: str) -> _Measured:
    value = model.score(task, metric)
    document = model.documents[task]
    chance = document.get("chance") if metric == MAIN_METRIC else None
    counts = model.outcomes.get(task)
    if counts is None:
        rows = (document.get("counts") or {}).get("rows")
        return _Measured(value, rows, chance=chance)
    per_query = per_query_metrics(counts)[metric]
    if abs(float(per_query.mean()) - value) > 1e-6:
        raise ResultsError(
            f"{model.paths.get(task, task)}: its per-query outcomes give {metric} "
            f"{per_query.mean():.6f} but the file says {value:.6f}; the file was edited or "
            "is corrupt: rerun the task with --overwrite"
        )
    data = document.get("dataset") or {}
    return _Measured(value, len(per_query), per_query, data_id=data.get("sha256"), chance=chance)


def _draw(shown: list[TaskInfo], measured: dict[str, dict[str, _Measured]], resamples: int,
          seed: int) -> None:
    """Bootstrap draws per task, with the same query indices for every model of a task."""
    for info in shown:
        for rows in {m[info.name].queries for m in measured.values()
                     if info.name in m and m[info.name].per_query is not None}:
            assert rows is not None
            indices = bootstrap_indices(rows, resamples, seed, info.name)
            for per_model in measured.values():
                entry = per_model.get(info.name)
                if entry is not None and entry.per_query is not None and entry.queries == rows:
                    entry.draws = bootstrap_means(entry.per_query, indices)


def _paired(a: _Measured, b: _Measured) -> bool:
    """Same queries in the same order: same count and, where recorded, the same data bytes."""
    if a.per_query is None or b.per_query is None or a.queries != b.queries:
        return False
    return a.data_id is None or b.data_id is None or a.data_id == b.data_id


def _mean_draws(parts: Sequence[_Measured]) -> np.ndarray | None:
    draws = [p.draws for p in parts if p.draws is not None]
    return np.mean(draws, axis=0) if len(draws) == len(parts) else None


def _interval(draws: np.ndarray | None, alpha: float) -> dict[str, float]:
    if draws is None:
        return {}
    lo, hi = percentile_interval(draws, alpha)
    return {"lo": lo, "hi": hi}


def _delta_fields(mine: _Measured, ref: _Measured, null: np.ndarray,
                  alpha: float) -> dict[str, Any]:
    assert mine.draws is not None
    assert ref.draws is not None
    lo, hi = percentile_interval(mine.draws - ref.draws, alpha)
    p = two_sided_p(mine.value - ref.value, null)
    return {"delta_lo": lo, "delta_hi": hi, "p_value": p, "significant": p < alpha}


def _status(name: str, measured: dict[str, _Measured], expected: list[TaskInfo]) -> ModelStatus:
    return ModelStatus(
        name=name,
        tasks=[t.name for t in expected if t.name in measured],
        expected=len(expected),
        missing=[t.name for t in expected if t.name not in measured],
        without_outcomes=[t for t, m in measured.items() if m.per_query is None],
    )


def _notes(status: dict[str, ModelStatus]) -> list[str]:
    notes = []
    old = sum(len(s.without_outcomes) for s in status.values())
    if old:
        notes.append(f"{old} result(s) carry no per-query outcomes (written by an older mmeb): "
                     "no interval or test for them; rerun those tasks with --overwrite")
    return notes
