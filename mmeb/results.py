"""Result files (one JSON per model and task, written atomically) and their summary.

Scores are stored as fractions; tables show percentages with one decimal, like the paper.
Aggregates follow the paper: a meta-task score is the mean over its datasets, IND and OOD are
means over the 20 and 16 datasets, and Overall is the mean over all datasets (not the mean of
the meta-task means).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb.atomic import write_atomic
from mmeb.errors import ResultsError
from mmeb.metrics import MAIN_METRIC
from mmeb.taskspec import META_TASKS

if TYPE_CHECKING:
    from mmeb.metrics import RankCounts

#: 2: per-query outcomes, and the IND/OOD role stored as "role". Version 1 files (role called
#: "split", no outcomes) still load.
SCHEMA_VERSION = 2
#: How per-query outcome arrays are stored: little-endian int32, zlib-compressed, base64 text.
OUTCOMES_FORMAT = "int32-le+zlib+base64"
_OUTCOME_FIELDS = ("above", "tied", "candidates")


def result_role(document: dict[str, Any]) -> str | None:
    """The task's IND/OOD role recorded in a result file, of any schema version."""
    role = document.get("role", document.get("split"))
    return role if isinstance(role, str) else None


def safe_name(name: str) -> str:
    """A file-system-safe folder name for a model id."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "model"


def result_path(output_dir: Path, model_id: str, task_name: str) -> Path:
    return output_dir / safe_name(model_id) / f"{task_name}.json"


def package_versions() -> dict[str, str]:
    """Versions of what shaped the numbers; heavy libraries only if the run imported them."""
    out = {"python": platform.python_version()}
    for dist, module in (("mmeb", "mmeb"), ("numpy", "numpy"), ("pyarrow", "pyarrow"),
                         ("pillow", "PIL"), ("torch", "torch"), ("transformers", "transformers"),
                         ("open_clip_torch", "open_clip"), ("peft", "peft")):
        if module in sys.modules:
            found = _installed_version(dist)
            if found is not None:
                out[dist] = found
    return out


@functools.cache
def _installed_version(dist: str) -> str | None:
    """An installed distribution's version, looked up once per process (each lookup scans the
    installed packages' metadata; every result of a run records the versions)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: Temporary files of write_json_atomic: ``.<name>.<pid>-<random>.tmp`` next to the result.
TEMPORARY_GLOB = ".*.tmp"


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON, all or nothing (:func:`mmeb.atomic.write_atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    write_atomic(path, (json.dumps(document, indent=2, sort_keys=False) + "\n").encode(), tmp)


def encode_outcomes(counts: RankCounts) -> dict[str, Any]:
    """Each query's rank outcome, in data row order, as compact text (no pickle, no numpy file).

    ``above`` and ``tied`` are the distinct candidates above and tied with the gold, so every
    metric can be recomputed and two models compared query by query later.
    """
    import base64
    import zlib

    import numpy as np

    def pack(values: np.ndarray) -> str:
        raw = np.ascontiguousarray(values, dtype="<i4").tobytes()
        return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")

    arrays = (counts.above, counts.tied, counts.num_candidates)
    return {"format": OUTCOMES_FORMAT, "rows": len(counts.above),
            **{name: pack(values) for name, values in zip(_OUTCOME_FIELDS, arrays, strict=True)}}


def decode_outcomes(document: dict[str, Any], path: Path | str = "result") -> RankCounts | None:
    """The per-query outcomes of a result document; None for files written without them."""
    import base64
    import binascii
    import zlib

    import numpy as np

    from mmeb.metrics import RankCounts

    stored = document.get("outcomes")
    if stored is None:
        return None
    fix = "rerun the task with --overwrite"
    if not isinstance(stored, dict) or stored.get("format") != OUTCOMES_FORMAT:
        found = stored.get("format") if isinstance(stored, dict) else type(stored).__name__
        raise ResultsError(f"{path}: outcomes in unknown format {found!r}; {fix}")
    rows = stored.get("rows")
    if not isinstance(rows, int) or rows < 0:
        raise ResultsError(f"{path}: outcomes have no valid row count; {fix}")
    arrays = []
    for name in _OUTCOME_FIELDS:
        try:
            # Bounded decompression: a corrupt or hostile file cannot inflate past rows * 4.
            inflater = zlib.decompressobj()
            raw = inflater.decompress(base64.b64decode(stored[name], validate=True), rows * 4 + 1)
        except (KeyError, TypeError, ValueError, binascii.Error, zlib.error):
            raise ResultsError(f"{path}: outcomes field {name!r} is missing or corrupt; {fix}"
                               ) from None
        if len(raw) != rows * 4 or inflater.unconsumed_tail:
            raise ResultsError(f"{path}: outcomes field {name!r} does not hold {rows} values; "
                               f"{fix}")
        arrays.append(np.frombuffer(raw, dtype="<i4").astype(np.int64))
    above, tied, candidates = arrays
    if (above < 0).any() or (tied < 0).any() or (above + tied + 1 > candidates).any():
        raise ResultsError(f"{path}: outcomes are inconsistent (more ranks than candidates); "
                           f"{fix}")
    return RankCounts(above, tied, candidates)


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder``; call only as its one writer."""
    removed = []
    for tmp in folder.glob(TEMPORARY_GLOB):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


_RERUN_FIX = "delete it or pass --overwrite"


def read_result(path: Path, fix: str = _RERUN_FIX) -> dict[str, Any]:
    """One result file, checked to be a result; ``fix`` is the advice for a bad one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"cannot read result {path} ({exc}); {fix}") from None
    problem = _result_problem(document)
    if problem:
        raise ResultsError(f"{path} is not an mmeb result file ({problem}); {fix}")
    return document  # type: ignore[no-any-return]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _result_problem(document: Any) -> str | None:
    """What makes ``document`` unusable as a result, or None (the fields tables rely on)."""
    if not isinstance(document, dict):
        return f"a JSON {type(document).__name__}, not an object"
    if not isinstance(document.get("task"), str) or not document["task"]:
        return "no task name"
    metrics = document.get("metrics")
    if not isinstance(metrics, dict):
        return "no metrics object"
    bad = [k for k, v in metrics.items() if not _is_number(v)]
    if bad:
        return f"metric {bad[0]!r} is not a number"
    for key in ("meta_task", "role", "split", "model"):
        if document.get(key) is not None and not isinstance(document[key], str):
            return f"{key!r} is not a string"
    if document.get("chance") is not None and not _is_number(document["chance"]):
        return "'chance' is not a number"
    if not isinstance(document.get("counts", {}), dict):
        return "'counts' is not an object"
    return None


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every result file directly inside ``folder`` (one model's results), one per task."""
    fix = f"move it out of {folder}"
    results: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        document = read_result(path, fix)
        task = document["task"]
        if task in seen:
            raise ResultsError(
                f"{seen[task].name} and {path.name} in {folder} are both results for task "
                f"{task}; keep one (a mean must count each task once)"
            )
        seen[task] = path
        results.append(document)
    return results


@dataclass
class Summary:
    model: str
    metric: str
    per_task: dict[str, float]
    meta_tasks: dict[str, float]
    ind: float | None
    ood: float | None
    overall: float | None
    num_tasks: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "metric": self.metric, "num_tasks": self.num_tasks,
            "meta_tasks": self.meta_tasks, "IND": self.ind, "OOD": self.ood,
            "overall": self.overall, "per_task": self.per_task,
        }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(results: list[dict[str, Any]], metric: str = MAIN_METRIC) -> Summary:
    """Aggregate one model's task results the way the paper does."""
    if not results:
        raise ResultsError("no results to summarise")
    per_task: dict[str, float] = {}
    for r in results:
        if r["task"] in per_task:
            raise ResultsError(
                f"two results for task {r['task']}; each task may count once in a summary"
            )
        if not _is_number(r["metrics"].get(metric)):
            raise ResultsError(f"the result for task {r['task']} has no metric {metric!r}")
        per_task[r["task"]] = float(r["metrics"][metric])
    meta = {m: _mean([per_task[r["task"]] for r in results if r.get("meta_task") == m])
            for m in META_TASKS}
    return Summary(
        model=str(results[0].get("model", "?")),
        metric=metric,
        per_task=per_task,
        meta_tasks={m: v for m, v in meta.items() if v is not None},
        ind=_mean([per_task[r["task"]] for r in results if result_role(r) == "IND"]),
        ood=_mean([per_task[r["task"]] for r in results if result_role(r) == "OOD"]),
        overall=_mean(list(per_task.values())),
        num_tasks=len(per_task),
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_summary(summary: Summary, results: list[dict[str, Any]], fmt: str = "simple") -> str:
    """Per-task table, then the aggregates, in percent."""
    from tabulate import tabulate

    label = f"{summary.metric} (%)"
    rows = [[r["task"], r.get("meta_task", ""), result_role(r) or "",
             _pct(r["metrics"][summary.metric]), _pct(r.get("chance")),
             r.get("counts", {}).get("rows", "")] for r in results]
    table = tabulate(rows, headers=["task", "meta-task", "role", label, "chance (%)", "queries"],
                     tablefmt=fmt, disable_numparse=True)
    agg = [[m, _pct(v)] for m, v in summary.meta_tasks.items()]
    agg += [["IND", _pct(summary.ind)], ["OOD", _pct(summary.ood)],
            [f"overall ({summary.num_tasks} tasks)", _pct(summary.overall)]]
    agg_table = tabulate(agg, headers=["aggregate", label], tablefmt=fmt, disable_numparse=True)
    return f"model: {summary.model}\n\n{table}\n\n{agg_table}"
