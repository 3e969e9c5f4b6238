"""Aggregation the paper's way, checked against the paper's own published tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmeb.errors import ResultsError
from mmeb.results import format_summary, read_result, summarize, write_json_atomic
from mmeb.tasks import get_task

PAPER = json.loads((Path(__file__).parent / "data" / "paper_baselines.json").read_text())


def as_results(model: str, scores: dict[str, float]) -> list[dict]:
    results = []
    for name, pct in scores.items():
        task = get_task(name)
        results.append({"task": name, "model": model, "meta_task": task.meta_task,
                        "role": task.role, "metrics": {"hit@1": pct / 100}})
    return results


@pytest.mark.parametrize("model", sorted(PAPER))
def test_summary_reproduces_the_papers_aggregates(model):
    summary = summarize(as_results(model, PAPER[model]["per_dataset"]))
    reported = PAPER[model]["reported"]
    assert summary.num_tasks == 36
    for meta in ("classification", "vqa", "retrieval", "grounding"):
        assert 100 * summary.meta_tasks[meta] == pytest.approx(reported[meta], abs=0.06)
    assert 100 * summary.ind == pytest.approx(reported["IND"], abs=0.06)
    assert 100 * summary.ood == pytest.approx(reported["OOD"], abs=0.06)
    assert 100 * summary.overall == pytest.approx(reported["overall"], abs=0.06)


def test_overall_is_the_mean_over_datasets_not_over_meta_tasks():
    scores = {"ImageNet-1K": 100.0, "N24News": 100.0, "HatefulMemes": 100.0, "CIRR": 0.0}
    summary = summarize(as_results("m", scores))
    assert summary.overall == pytest.approx(0.75)
    assert summary.meta_tasks == {"classification": 1.0, "retrieval": 0.0}


def test_table_shows_percent_with_the_metric_name():
    results = as_results("m", {"ImageNet-1K": 55.8, "CIRR": 12.6})
    table = format_summary(summarize(results), results)
    assert "hit@1 (%)" in table
    assert "55.8" in table
    assert "34.2" in table


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "m" / "x.json"
    write_json_atomic(path, {"task": "x", "metrics": {}})
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
    with pytest.raises(TypeError):
        write_json_atomic(path, {"task": "x", "metrics": {"bad": object()}})
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
    assert read_result(path) == {"task": "x", "metrics": {}}


def test_corrupt_result_file_is_a_clear_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(ResultsError, match=r"cannot read result .*x.json.*--overwrite"):
        read_result(path)
