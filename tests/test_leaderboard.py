"""Comparisons: golden tables from fixture results, completeness, refusals, statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from leaderboard_fixtures import document, hits, random_model, write_model

from mmeb.errors import MMEBError, ResultsError
from mmeb.leaderboard import ModelResults, compare, load_models, resolve_models
from mmeb.leaderboard.formats import render
from mmeb.leaderboard.stats import bootstrap_indices, bootstrap_means, percentile_interval
from mmeb.tasks import collections

SAMPLE = [t.name for t in collections()["sample"]]
META = {t.name: t.meta_task for t in collections()["sample"]}
PAPER = json.loads((Path(__file__).parent / "data" / "paper_baselines.json").read_text())


def load(results: Path, *names: str) -> list[ModelResults]:
    return load_models(resolve_models(list(names), results))


def test_golden_sample_table_with_means_computed_here(tmp_path):
    a = random_model(tmp_path, "a", SAMPLE, 0.5, seed=1)
    b = random_model(tmp_path, "b", SAMPLE, 0.7, seed=2)
    (table,) = compare(load(tmp_path, "a", "b"), resamples=200)
    wide = table.wide()
    for name, correct in (("a", a), ("b", b)):
        for task in SAMPLE:
            assert wide.loc[task, name] == pytest.approx(correct[task].mean())
        for meta in ("classification", "vqa", "retrieval", "grounding"):
            expected = np.mean([correct[t].mean() for t in SAMPLE if META[t] == meta])
            assert wide.loc[meta, name] == pytest.approx(expected)
        overall = np.mean([c.mean() for c in correct.values()])
        assert wide.loc["overall", name] == pytest.approx(overall)
        assert wide.loc["IND", name] == pytest.approx(overall)  # every sample task is IND
    assert "OOD" not in wide.index  # nobody has an OOD dataset: no empty row
    deltas = table.cells.set_index(["row", "column"])["delta"]
    assert deltas["overall", "b"] == pytest.approx(wide.loc["overall", "b"] - wide.loc[
        "overall", "a"])
    text = render([table], "markdown")
    assert f"{100 * wide.loc['overall', 'b']:.1f} [" in text
    assert "Δ b vs a" in text


def test_mmeb_aggregates_match_the_papers_printed_means():
    """A model whose outcomes reproduce CLIP's per-dataset numbers gets the paper's Table 2."""
    scores = PAPER["CLIP"]["per_dataset"]
    docs = [document("clip-like", task, *hits(np.arange(1000) < round(10 * pct)))
            for task, pct in scores.items()]
    (table,) = compare([ModelResults.from_documents("clip-like", docs)], resamples=50)
    wide = table.wide()
    for key, printed in PAPER["CLIP"]["reported"].items():
        assert 100 * wide.loc[key, "clip-like"] == pytest.approx(printed, abs=0.06)
    assert table.status["clip-like"].complete


def test_an_incomplete_model_is_marked_and_gets_no_aggregate_delta(tmp_path):
    random_model(tmp_path, "full", SAMPLE, 0.5, seed=1)
    random_model(tmp_path, "part", SAMPLE[:-2], 0.5, seed=2)
    (table,) = compare(load(tmp_path), resamples=100)
    status = table.status["part"]
    assert not status.complete
    assert status.missing == SAMPLE[-2:]
    cells = table.cells.set_index(["row", "column"])
    assert bool(cells.loc[("overall", "part"), "partial"])
    assert cells.loc[("overall", "part"), "n_datasets"] == 10
    assert not bool(cells.loc[("overall", "full"), "partial"])
    assert np.isnan(cells.loc[("overall", "part"), "delta"])
    assert np.isnan(cells.loc[("grounding", "part"), "delta"])  # it lacks both grounding sets
    assert not np.isnan(cells.loc[("classification", "part"), "delta"])  # same datasets
    text = render([table], "markdown")
    assert "part (incomplete: 10/12)" in text
    assert "†" in text
    assert "part: mean over the datasets it has (10 of 12; missing Sample-Grounding" in text


def test_the_same_task_twice_is_refused(tmp_path):
    random_model(tmp_path, "m", SAMPLE[:2], 0.5, seed=1)
    copy = tmp_path / "m" / "copy.json"
    copy.write_text((tmp_path / "m" / f"{SAMPLE[0]}.json").read_text())
    with pytest.raises(ResultsError, match=f"two results for task {SAMPLE[0]} of model 'm'"):
        load(tmp_path, "m")


def test_results_with_mixed_settings_are_refused(tmp_path):
    docs = [document("m", SAMPLE[0], *hits(np.ones(20))),
            document("m", SAMPLE[1], *hits(np.ones(20)), limit=20)]
    write_model(tmp_path, "m", docs)
    with pytest.raises(ResultsError, match=r"made with different settings .*limit: null vs 20"):
        load(tmp_path, "m")


def test_two_folders_with_one_name_are_refused(tmp_path):
    random_model(tmp_path / "x", "m", SAMPLE[:1], 0.5, seed=1)
    random_model(tmp_path / "y", "m", SAMPLE[:1], 0.5, seed=1)
    with pytest.raises(ResultsError, match="two result folders are named 'm'"):
        load_models([tmp_path / "x" / "m", tmp_path / "y" / "m"])


def test_unknown_model_name_lists_what_exists(tmp_path):
    random_model(tmp_path, "m", SAMPLE[:1], 0.5, seed=1)
    with pytest.raises(ResultsError, match=r"no results for model 'zz' .*found: m\).*--run"):
        load(tmp_path, "zz")


def test_edited_scores_that_disagree_with_outcomes_are_refused(tmp_path):
    doc = document("m", SAMPLE[0], *hits(np.arange(10) < 5))
    doc["metrics"]["hit@1"] = 0.9
    with pytest.raises(ResultsError, match=r"outcomes give hit@1 0.500000 but the file says"):
        compare([ModelResults.from_documents("m", [doc])])


def test_old_results_without_outcomes_show_scores_without_intervals():
    docs = [document("old", t, *hits(np.arange(10) < 4), outcomes=False) for t in SAMPLE[:3]]
    (table,) = compare([ModelResults.from_documents("old", docs)], resamples=50)
    cells = table.cells.set_index(["row", "column"])
    assert cells.loc[(SAMPLE[0], "old"), "value"] == pytest.approx(0.4)
    assert np.isnan(cells.loc[(SAMPLE[0], "old"), "lo"])
    text = render([table], "markdown")
    assert text.count("carry no per-query outcomes") == 1
    assert "3 result(s) carry no per-query outcomes" in text


def test_intervals_cover_the_true_rate_at_about_the_nominal_level():
    rng = np.random.default_rng(7)
    rows, true_rate, trials = 200, 0.3, 300
    indices = bootstrap_indices(rows, 400, seed=0, task="coverage")
    covered = 0
    for _ in range(trials):
        values = (rng.random(rows) < true_rate).astype(float)
        lo, hi = percentile_interval(bootstrap_means(values, indices))
        covered += lo <= true_rate <= hi
    assert 0.90 <= covered / trials <= 0.985


def test_aggregate_intervals_cover_the_true_mean():
    rng = np.random.default_rng(11)
    tasks, rates = SAMPLE[:4], np.array([0.2, 0.4, 0.6, 0.8])
    covered, trials = 0, 80
    for trial in range(trials):
        docs = [document("m", t, *hits(rng.random(100) < r)) for t, r in zip(tasks, rates,
                                                                            strict=True)]
        (table,) = compare([ModelResults.from_documents("m", docs)], resamples=200, seed=trial)
        cell = table.cells.set_index(["row", "column"]).loc[("overall", "m")]
        covered += cell.lo <= rates.mean() <= cell.hi
    assert 0.88 <= covered / trials <= 1.0


def _pair(rng: np.random.Generator, rows: int, planted: float) -> tuple[np.ndarray, np.ndarray]:
    """Two models that agree on most queries; B is right on ``planted`` more of them."""
    a = rng.random(rows) < 0.6
    b = a.copy()
    redraw = rng.random(rows) < 0.2  # disagreement in both directions: noise
    b[redraw] = rng.random(int(redraw.sum())) < 0.6
    wrong = np.flatnonzero(~b)
    b[rng.choice(wrong, size=int(planted * rows), replace=False)] = True
    return a, b


def _paired_p(a: np.ndarray, b: np.ndarray, seed: int) -> float:
    docs_a = [document("a", SAMPLE[0], *hits(a))]
    docs_b = [document("b", SAMPLE[0], *hits(b))]
    (table,) = compare([ModelResults.from_documents("a", docs_a),
                        ModelResults.from_documents("b", docs_b)], resamples=500, seed=seed)
    cell = table.cells.set_index(["row", "column"]).loc[(SAMPLE[0], "b")]
    assert cell.delta == pytest.approx(b.mean() - a.mean())
    assert cell.delta_lo <= cell.delta <= cell.delta_hi
    return float(cell.p_value)


def test_the_paired_test_finds_a_planted_5_point_difference_and_not_a_0_point_one():
    rng = np.random.default_rng(3)
    planted = [_paired_p(*_pair(rng, 1000, 0.05), seed=s) for s in range(10)]
    assert max(planted) < 0.05
    null = [_paired_p(*_pair(rng, 1000, 0.0), seed=s) for s in range(40)]
    assert sum(p < 0.05 for p in null) <= 6  # about 5% false positives, never most of them
    assert np.median(null) > 0.2


def test_the_interval_does_not_depend_on_the_other_models(tmp_path):
    random_model(tmp_path, "a", SAMPLE[:2], 0.5, seed=1)
    random_model(tmp_path, "b", SAMPLE[:2], 0.6, seed=2)
    alone = compare(load(tmp_path, "b"), resamples=100)[0].wide("lo")["b"]
    together = compare(load(tmp_path, "a", "b"), resamples=100)[0].wide("lo")["b"]
    assert alone.equals(together)


def test_bad_options_are_clear_errors(tmp_path):
    model = ModelResults.from_documents("m", [document("m", SAMPLE[0], *hits(np.ones(5)))])
    with pytest.raises(ResultsError, match="unknown metric 'acc'"):
        compare([model], metric="acc")
    with pytest.raises(MMEBError, match="no published row 'Nope'; published rows: CLIP"):
        compare([model], published=["Nope"])


def test_a_task_selection_defines_completeness_and_aggregates(tmp_path):
    full = random_model(tmp_path, "a", SAMPLE, 0.5, seed=1)
    chosen = [t for t in SAMPLE if META[t] == "retrieval"]
    (table,) = compare(load(tmp_path, "a"), tasks=chosen, resamples=50)
    assert table.status["a"].complete
    assert table.status["a"].expected == 6
    assert table.wide().loc["overall", "a"] == pytest.approx(
        np.mean([full[t].mean() for t in chosen]))
    assert set(table.dataset_rows()["row"]) == set(chosen)


def test_result_folders_read_into_one_frame(tmp_path):
    from mmeb.leaderboard.load import results_frame

    a = random_model(tmp_path, "a", SAMPLE[:3], 0.5, seed=1)
    random_model(tmp_path, "b", SAMPLE[:2], 0.5, seed=2)
    frame = results_frame(load(tmp_path))
    assert len(frame) == 5
    assert set(frame["model"]) == {"a", "b"}
    row = frame[(frame["model"] == "a") & (frame["task"] == SAMPLE[2])].iloc[0]
    assert row["hit@1"] == pytest.approx(a[SAMPLE[2]].mean())
    assert row["meta_task"] == META[SAMPLE[2]]
    assert row["role"] == "IND"
    assert row["suite"] == "sample"
    assert bool(row["has_outcomes"])
    assert row["rows"] == 60


def test_the_cli_metric_choices_are_the_metrics():
    from mmeb.cli import METRICS
    from mmeb.metrics import METRIC_NAMES

    assert METRICS == METRIC_NAMES
