"""The task catalog: every benchmark's tasks and the named collections of them, in one place.

A benchmark contributes a tuple of :class:`TaskSpec` (MMEB v1 in :mod:`mmeb.mmeb_v1`, the sample
suite and its MMEB-sized twin in :mod:`mmeb.sample.spec`); :func:`collections` names the task
lists that ``--split`` selects. Nothing here loads data.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from mmeb.errors import MMEBError
from mmeb.mmeb_v1 import MMEB_EVAL_DATASET, MMEB_EVAL_REVISION, MMEB_TRAIN_DATASET, MMEB_V1_TASKS
from mmeb.sample.spec import SAMPLE_TASKS, full_tasks
from mmeb.taskspec import META_TASKS, ROLES, TaskSpec

__all__ = [
    "META_TASKS",
    "MMEB_EVAL_DATASET",
    "MMEB_EVAL_REVISION",
    "MMEB_TRAIN_DATASET",
    "MMEB_V1_TASKS",
    "ROLES",
    "TaskSpec",
    "all_tasks",
    "collections",
    "get_collection",
    "get_task",
    "select_tasks",
]


@cache
def all_tasks() -> tuple[TaskSpec, ...]:
    """Every task the catalog knows, MMEB's first."""
    return MMEB_V1_TASKS + SAMPLE_TASKS + full_tasks()


@cache
def collections() -> dict[str, tuple[TaskSpec, ...]]:
    """Named task collections (the values of ``--split``): eval (36), ind (20), ood (16), each
    meta-task, sample (the offline suite) and sample-full (its MMEB-sized twin, for benchmarks)."""
    v1 = MMEB_V1_TASKS
    named = {
        "eval": v1,
        "ind": tuple(t for t in v1 if t.role == "IND"),
        "ood": tuple(t for t in v1 if t.role == "OOD"),
    }
    for meta in META_TASKS:
        named[meta] = tuple(t for t in v1 if t.meta_task == meta)
    named["sample"] = SAMPLE_TASKS
    named["sample-full"] = full_tasks()
    return named


def get_task(name: str) -> TaskSpec:
    """Look a task up by its exact name (case-insensitive as a convenience)."""
    tasks = all_tasks()
    for task in tasks:
        if task.name == name:
            return task
    for task in tasks:
        if task.name.lower() == name.lower():
            return task
    # The sample-full twins mirror the MMEB names; listing them too would bury the rest.
    twins = {t.name for t in full_tasks()}
    valid = ", ".join(t.name for t in tasks if t.name not in twins)
    raise MMEBError(f"unknown task {name!r}; valid tasks: {valid} (and Full-<MMEB name>)")


def get_collection(name: str) -> tuple[TaskSpec, ...]:
    named = collections()
    try:
        return named[name.lower()]
    except KeyError:
        raise MMEBError(
            f"unknown split {name!r}; valid splits: {', '.join(named)}"
        ) from None


def select_tasks(
    split: str | None = None,
    names: Iterable[str] | None = None,
    meta_task: str | None = None,
) -> tuple[TaskSpec, ...]:
    """Resolve ``--split`` / ``--tasks`` / ``--meta-task`` into an ordered task tuple."""
    if names is not None:
        wanted = [n.strip() for n in names if n.strip()]
        if not wanted:
            raise MMEBError("--tasks names no task; pass comma-separated task names")
        # A task named twice runs once: a repeat would count twice in every mean.
        tasks = tuple(dict.fromkeys(get_task(n) for n in wanted))
    else:
        tasks = get_collection(split or "eval")
    if meta_task:
        if meta_task not in META_TASKS:
            raise MMEBError(
                f"unknown meta-task {meta_task!r}; valid meta-tasks: {', '.join(META_TASKS)}"
            )
        tasks = tuple(t for t in tasks if t.meta_task == meta_task)
    return tasks
