"""Exports of one model's results, and readers that bring them back in.

- **MMEB leaderboard submission JSON**, the shape of the official score files:
  ``{"metadata": {"model_name", "report_generated_date"}, "metrics": {"image": {<Dataset>:
  {"hit@1": ..., ...}}}}``. With one gold per query, precision@k = hit@k / k, recall@k =
  hit@k, f1@k = 2 hit@k / (k + 1), map@k = mrr@k and linear and exponential nDCG agree; these
  identities hold in the official files and are how the fields are filled. mrr@5 / mrr@10 need
  the per-query outcomes and are left out for results without them.
- **mteb-style result files**: ``<out>/<model>/<revision>/<Task>.json`` with ``task_name``,
  ``dataset_revision``, ``scores.test[0]`` (``main_score``, ``hit_rate_at_k``, ``ndcg_at_k``,
  ``mrr``, ``accuracy``), ``evaluation_time`` and ``date``, plus ``model_meta.json``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from mmeb.errors import ResultsError
from mmeb.leaderboard.load import ModelResults
from mmeb.metrics import MAIN_METRIC, reciprocal_rank_at
from mmeb.results import safe_name, utc_now, write_json_atomic

KS = (1, 5, 10)
MTEB_REVISION = "no_revision_available"  # mteb's folder name when a model has no revision
_MTEB_NAMES = {"hit@1": "hit_rate_at_1", "hit@5": "hit_rate_at_5", "hit@10": "hit_rate_at_10",
               "ndcg@5": "ndcg_at_5", "ndcg@10": "ndcg_at_10", "mrr": "mrr"}


def mmeb_dataset_metrics(model: ModelResults, task: str) -> dict[str, float | int]:
    """The official score-file fields for one task, from our metrics (and outcomes)."""
    document = model.documents[task]
    metrics = document["metrics"]
    rows = int((document.get("counts") or {}).get("rows", 0))
    hit = {k: float(metrics[f"hit@{k}"]) for k in KS}
    ndcg = {1: hit[1], 5: float(metrics["ndcg@5"]), 10: float(metrics["ndcg@10"])}
    mrr: dict[int, float] = {1: hit[1]}
    counts = model.outcomes.get(task)
    if counts is not None:
        mrr.update({k: float(reciprocal_rank_at(counts, k).mean()) for k in (5, 10)})
    out: dict[str, float | int] = {}
    out.update({f"hit@{k}": hit[k] for k in KS})
    out.update({f"ndcg_linear@{k}": ndcg[k] for k in KS})
    out.update({f"ndcg_exponential@{k}": ndcg[k] for k in KS})
    out.update({f"precision@{k}": hit[k] / k for k in KS})
    out.update({f"recall@{k}": hit[k] for k in KS})
    out.update({f"f1@{k}": 2 * hit[k] / (k + 1) for k in KS})
    out.update({f"map@{k}": mrr[k] for k in KS if k in mrr})
    out.update({f"mrr@{k}": mrr[k] for k in KS if k in mrr})
    out.update({"num_pred": rows, "num_data": rows})
    return out


def mmeb_submission(model: ModelResults) -> dict[str, Any]:
    return {
        "metadata": {"model_name": model.name, "report_generated_date": utc_now()},
        "metrics": {"image": {task: mmeb_dataset_metrics(model, task)
                              for task in model.documents}},
    }


def write_mmeb_submission(model: ModelResults, path: Path) -> Path:
    write_json_atomic(path, mmeb_submission(model))
    return path


def read_mmeb_submission_document(
    document: Any, label: str
) -> tuple[str, dict[str, dict[str, float]]]:
    """(model name, metric -> dataset -> value) in mmeb's metric names, image datasets only."""
    try:
        image = document["metrics"]["image"]
        name = str(document.get("metadata", {}).get("model_name") or Path(label).stem)
        if not isinstance(image, dict):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise ResultsError(f"{label} is not an MMEB leaderboard score file (needs "
                           "metrics.image.<Dataset>.hit@1)") from None
    ours = {"hit@1": "hit@1", "hit@5": "hit@5", "hit@10": "hit@10",
            "ndcg_linear@5": "ndcg@5", "ndcg_linear@10": "ndcg@10"}
    out: dict[str, dict[str, float]] = {m: {} for m in ours.values()}
    for dataset, fields in image.items():
        if not isinstance(fields, dict) or MAIN_METRIC not in fields:
            raise ResultsError(f"{label}: dataset {dataset!r} has no {MAIN_METRIC}")
        for theirs, mine in ours.items():
            if theirs in fields:
                out[mine][dataset] = float(fields[theirs])
    return name, out


def read_mmeb_submission(path: Path) -> tuple[str, dict[str, dict[str, float]]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"cannot read {path} ({exc})") from None
    return read_mmeb_submission_document(document, str(path))


def _timestamp(date: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(date)).timestamp()
    except ValueError:
        return None


def mteb_task_result(model: ModelResults, task: str) -> dict[str, Any]:
    document = model.documents[task]
    metrics = document["metrics"]
    scores: dict[str, Any] = {"hf_subset": "default", "languages": ["eng-Latn"],
                              "main_score": float(metrics[MAIN_METRIC]),
                              "accuracy": float(metrics[MAIN_METRIC])}
    scores.update({_MTEB_NAMES[k]: float(v) for k, v in metrics.items() if k in _MTEB_NAMES})
    data = document.get("dataset") or {}
    return {
        "dataset_revision": data.get("revision") or data.get("sha256"),
        "task_name": task,
        "mteb_version": None,
        "scores": {"test": [scores]},
        "evaluation_time": float(sum((document.get("timings") or {}).values())),
        "kg_co2_emissions": None,
        "date": _timestamp(document.get("date")),
        "mmeb": {"version": (document.get("versions") or {}).get("mmeb"),
                 "meta_task": document.get("meta_task"), "queries":
                 (document.get("counts") or {}).get("rows")},
    }


def write_mteb_results(model: ModelResults, out: Path) -> Path:
    """``out/<model>/no_revision_available/<Task>.json`` and ``model_meta.json``."""
    folder = out / safe_name(model.name) / MTEB_REVISION
    for task in model.documents:
        write_json_atomic(folder / f"{task}.json", mteb_task_result(model, task))
    adapter = model.config.get("adapter") or {}
    write_json_atomic(folder / "model_meta.json", {
        "name": model.name, "revision": None, "similarity_fn_name": "cosine",
        "framework": ["mmeb"], "adapter": adapter,
    })
    return folder


def read_mteb_results(folder: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """(model name, metric -> task -> value) from a folder written by ``write_mteb_results``
    (or by mteb, for the metrics both know)."""
    meta_path = folder / "model_meta.json"
    name = folder.parent.name
    if meta_path.exists():
        name = str(json.loads(meta_path.read_text(encoding="utf-8")).get("name") or name)
    back = {v: k for k, v in _MTEB_NAMES.items()}
    out: dict[str, dict[str, float]] = {k: {} for k in _MTEB_NAMES}
    for path in sorted(folder.glob("*.json")):
        if path.name == "model_meta.json":
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            scores = document["scores"]["test"][0]
            task = str(document["task_name"])
        except (OSError, json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise ResultsError(f"{path} is not an mteb task result (needs task_name and "
                               "scores.test[0])") from None
        for theirs, mine in back.items():
            if theirs in scores:
                out[mine][task] = float(scores[theirs])
    return name, out
