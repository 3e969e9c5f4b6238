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


def test_per_query_outcomes_round_trip_and_reproduce_the_metrics(tmp_path):
    import numpy as np
    from mmeb_fixtures import colour_classification

    import mmeb
    from mmeb.metrics import RankCounts, summarize_metrics
    from mmeb.random_encoder import RandomEncoder
    from mmeb.results import decode_outcomes, encode_outcomes

    colour_classification(tmp_path / "data")
    outcome = mmeb.evaluate(RandomEncoder(dim=4), tasks=["ImageNet-1K"], progress=False,
                            output_dir=tmp_path / "r", data_dir=str(tmp_path / "data"))
    document = read_result(tmp_path / "r" / "random" / "ImageNet-1K.json")
    assert document["schema_version"] == 2
    counts = decode_outcomes(document)
    assert counts is not None
    assert len(counts.above) == document["counts"]["rows"] == 12
    assert summarize_metrics(counts) == pytest.approx(outcome.results[0]["metrics"])
    assert (counts.num_candidates == 8).all()

    big = RankCounts(np.arange(5000) % 997, np.zeros(5000, dtype=np.int64),
                     np.full(5000, 1000))
    again = decode_outcomes(json.loads(json.dumps({"outcomes": encode_outcomes(big)})))
    assert again is not None
    assert np.array_equal(again.above, big.above)
    assert np.array_equal(again.tied, big.tied)


def test_results_without_outcomes_load_and_broken_outcomes_are_refused(tmp_path):
    import numpy as np

    from mmeb.metrics import RankCounts
    from mmeb.results import decode_outcomes, encode_outcomes

    assert decode_outcomes({"task": "x", "metrics": {}}) is None
    stored = encode_outcomes(RankCounts(np.array([0, 3]), np.array([0, 0]), np.array([4, 4])))
    with pytest.raises(ResultsError, match=r"x.json: outcomes field 'above' does not hold 3"):
        decode_outcomes({"outcomes": {**stored, "rows": 3}}, "x.json")
    with pytest.raises(ResultsError, match="field 'above' is missing or corrupt"):
        decode_outcomes({"outcomes": {**stored, "above": "!!"}})
    with pytest.raises(ResultsError, match="unknown format 'pickle'"):
        decode_outcomes({"outcomes": {**stored, "format": "pickle"}})
    bad = encode_outcomes(RankCounts(np.array([0, 4]), np.array([0, 0]), np.array([4, 4])))
    with pytest.raises(ResultsError, match="inconsistent"):
        decode_outcomes({"outcomes": bad})


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import errno
    import os

    import mmeb.atomic
    from mmeb.atomic import write_atomic

    target, tmp = tmp_path / "r.json", tmp_path / ".r.json.1-ab.tmp"
    target.write_bytes(b"old")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mmeb.atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new", tmp)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    monkeypatch.undo()
    write_atomic(target, b"new", tmp)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
