"""Result folders to models: one ``ModelResults`` per folder, checked, and a pandas frame.

A model's folder must hold one result per task, all made with the same settings; anything else
is an error naming the files, never silently averaged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb.errors import ResultsError
from mmeb.leaderboard.taskinfo import TaskInfo, task_info
from mmeb.metrics import METRIC_NAMES, RankCounts
from mmeb.results import decode_outcomes, read_result, safe_name

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class ModelResults:
    """One model's result documents, keyed by task name."""

    name: str
    documents: dict[str, dict[str, Any]]
    paths: dict[str, Path] = field(default_factory=dict)
    outcomes: dict[str, RankCounts] = field(default_factory=dict)
    folder: Path | None = None

    @classmethod
    def from_documents(
        cls,
        name: str,
        documents: Iterable[dict[str, Any]],
        paths: Sequence[Path | None] | None = None,
        folder: Path | None = None,
    ) -> ModelResults:
        docs = list(documents)
        where = list(paths) if paths is not None else [None] * len(docs)
        model = cls(name=name, documents={}, folder=folder)
        for document, path in zip(docs, where, strict=True):
            label = path or f"{name}/{document.get('task')}"
            task = str(document["task"])
            if task in model.documents:
                first = model.paths.get(task, f"{name}/{task}")
                raise ResultsError(
                    f"two results for task {task} of model {name!r}: {first} and {label}; "
                    "keep one of them"
                )
            model.documents[task] = document
            if path is not None:
                model.paths[task] = path
            counts = decode_outcomes(document, label)
            if counts is not None:
                model.outcomes[task] = counts
        model._check_one_setting()
        return model

    def _check_one_setting(self) -> None:
        """All results of one model name must come from one model with one configuration."""
        first_task: str | None = None
        first: dict[str, Any] = {}
        for task, document in self.documents.items():
            settings = _settings(document)
            if first_task is None:
                first_task, first = task, settings
                continue
            if settings != first:
                changed = sorted(k for k in set(settings) | set(first)
                                 if settings.get(k) != first.get(k))
                detail = ", ".join(f"{k}: {json.dumps(first.get(k))} vs "
                                   f"{json.dumps(settings.get(k))}" for k in changed)
                raise ResultsError(
                    f"results of model {self.name!r} were made with different settings "
                    f"({self._where(first_task)} vs {self._where(task)}: {detail}); rerun the "
                    "odd ones with the same options, or give them another --name"
                )

    def _where(self, task: str) -> str:
        path = self.paths.get(task)
        return str(path) if path is not None else f"{self.name}/{task}"

    def info(self, task: str) -> TaskInfo:
        return task_info(task, self.documents[task])

    def score(self, task: str, metric: str) -> float:
        try:
            return float(self.documents[task]["metrics"][metric])
        except KeyError:
            raise ResultsError(f"{self._where(task)} has no metric {metric!r}; choose --metric "
                               f"from {', '.join(METRIC_NAMES)}") from None

    @property
    def config(self) -> dict[str, Any]:
        """The recorded configuration of the model (the first result's; all agree)."""
        for document in self.documents.values():
            return dict(document.get("config") or {})
        return {}

    @property
    def fingerprint(self) -> dict[str, Any]:
        for document in self.documents.values():
            return dict(document.get("fingerprint") or {})
        return {}


def _settings(document: dict[str, Any]) -> dict[str, Any]:
    """What must agree across one model's results: the run fingerprint, the adapter's recorded
    settings and the scoring rules. Batch size and device do not change the numbers."""
    config = document.get("config") or {}
    fingerprint = dict(document.get("fingerprint") or {})
    fingerprint.pop("data_sha256", None)  # each task has its own data
    return {"model": document.get("model"), **fingerprint,
            "adapter": config.get("adapter"), "scoring": config.get("scoring")}


def read_folder(folder: Path, name: str | None = None) -> ModelResults:
    paths = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not paths:
        raise ResultsError(f"no result files in {folder}; run `mmeb run ... --output-dir "
                           f"{folder.parent}` first")
    # Reading results never recomputes them, so the advice is about the file, not --overwrite.
    documents = [read_result(p, fix=f"move it out of {folder}") for p in paths]
    return ModelResults.from_documents(name or folder.name, documents, paths, folder)


def model_folders(results_dir: Path) -> list[Path]:
    """Folders directly under ``results_dir`` that hold result files."""
    if not results_dir.is_dir():
        raise ResultsError(f"results folder {results_dir} does not exist; pass --results DIR")
    return sorted(p for p in results_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.json")))


def resolve_models(names: Sequence[str], results_dir: Path) -> list[Path]:
    """Folders for ``names`` (a model name under ``results_dir``, or a folder path); with no
    names, every model folder found there."""
    if not names:
        found = model_folders(results_dir)
        if not found:
            raise ResultsError(f"no model results under {results_dir}; run `mmeb run --model M "
                               f"--output-dir {results_dir}` first")
        return found
    folders = []
    for name in names:
        direct = Path(name)
        folder = direct if direct.is_dir() and any(direct.glob("*.json")) else (
            results_dir / safe_name(name))
        if not folder.is_dir():
            available = ", ".join(p.name for p in model_folders(results_dir)) if (
                results_dir.is_dir()) else ""
            raise ResultsError(
                f"no results for model {name!r} under {results_dir} (found: {available or 'none'}"
                f"); run `mmeb run --model {name} --output-dir {results_dir}` or add --run"
            )
        folders.append(folder)
    return folders


def load_models(folders: Sequence[Path]) -> list[ModelResults]:
    models: list[ModelResults] = []
    seen: dict[str, Path] = {}
    for folder in folders:
        model = read_folder(folder)
        if model.name in seen:
            raise ResultsError(
                f"two result folders are named {model.name!r}: {seen[model.name]} and {folder}; "
                "rename one (each model name must be unique in a comparison)"
            )
        seen[model.name] = folder
        models.append(model)
    return models


def results_frame(models: Sequence[ModelResults]) -> pd.DataFrame:
    """One row per (model, task): task facts, every metric, counts, outcome availability."""
    import pandas as pd

    records = []
    for model in models:
        for task, document in model.documents.items():
            info = model.info(task)
            counts = document.get("counts") or {}
            records.append({
                "model": model.name, "task": task, "meta_task": info.meta_task,
                "role": info.role, "suite": info.suite,
                **{m: document.get("metrics", {}).get(m) for m in METRIC_NAMES},
                "chance": document.get("chance"), "rows": counts.get("rows"),
                "has_outcomes": task in model.outcomes,
                "path": str(model.paths.get(task, "")),
            })
    columns = ["model", "task", "meta_task", "role", "suite", *METRIC_NAMES, "chance", "rows",
               "has_outcomes", "path"]
    return pd.DataFrame.from_records(records, columns=columns)
