"""Result documents with per-query outcomes, built from chosen arrays (no model, no data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmeb.metrics import RankCounts, chance_hit1, summarize_metrics
from mmeb.results import encode_outcomes, write_json_atomic
from mmeb.tasks import get_task

CANDIDATES = 10


def hits(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcome arrays for queries that are right (gold first) or wrong (gold third)."""
    correct = np.asarray(correct, dtype=bool)
    above = np.where(correct, 0, 2)
    return above, np.zeros_like(above), np.full_like(above, CANDIDATES)


def document(model: str, task: str, above: np.ndarray, tied: np.ndarray,
             candidates: np.ndarray, *, outcomes: bool = True, **settings: Any) -> dict:
    spec = get_task(task)
    counts = RankCounts(np.asarray(above), np.asarray(tied), np.asarray(candidates))
    doc = {
        "schema_version": 2, "task": task, "model": model, "meta_task": spec.meta_task,
        "role": spec.role, "benchmark": spec.benchmark, "main_metric": "hit@1",
        "metrics": summarize_metrics(counts), "chance": chance_hit1(counts),
        "counts": {"rows": len(counts.above)},
        "config": {"adapter": {"name": settings.pop("adapter", model),
                               "checkpoint": settings.pop("checkpoint", None)}},
        "fingerprint": {"model": model, "limit": None, **settings},
        "dataset": {"kind": "local", "sha256": f"data-of-{task}"},
        "timings": {"score_s": 0.01}, "date": "2026-01-01T00:00:00+00:00",
    }
    if outcomes:
        doc["outcomes"] = encode_outcomes(counts)
    return doc


def write_model(results: Path, model: str, docs: list[dict]) -> Path:
    folder = results / model
    for doc in docs:
        write_json_atomic(folder / f"{doc['task']}.json", doc)
    return folder


def random_model(results: Path, model: str, tasks: list[str], rate: float, seed: int,
                 rows: int = 60, **settings: Any) -> dict[str, np.ndarray]:
    """Write a model whose queries are right with probability ``rate``; returns them."""
    rng = np.random.default_rng(seed)
    correct = {task: rng.random(rows) < rate for task in tasks}
    write_model(results, model, [document(model, t, *hits(c), **settings)
                                 for t, c in correct.items()])
    return correct


def read(path: Path) -> dict:
    return json.loads(path.read_text())
