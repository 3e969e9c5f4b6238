"""What the leaderboard needs to know about a task: meta-task, IND/OOD role, suite, order."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from mmeb.errors import MMEBError
from mmeb.results import result_role
from mmeb.tasks import META_TASKS, ROLES, TaskSpec, collections, get_task

#: Task collections a comparison is made over; aggregates are defined relative to one of them.
SUITES = ("eval", "sample", "sample-full")
SUITE_TITLES = {"eval": "MMEB (36 datasets)", "sample": "sample suite",
                "sample-full": "sample-full suite", "other": "other tasks"}


@dataclass(frozen=True)
class TaskInfo:
    name: str
    meta_task: str
    role: str
    suite: str
    order: int  # position in its suite (the paper's table order for MMEB)


@cache
def _suite_tables() -> dict[str, tuple[TaskSpec, ...]]:
    named = collections()
    return {suite: named[suite] for suite in SUITES}


@cache
def _known() -> dict[str, TaskInfo]:
    out: dict[str, TaskInfo] = {}
    for suite, specs in _suite_tables().items():
        for order, spec in enumerate(specs):
            out.setdefault(spec.name, TaskInfo(spec.name, spec.meta_task, spec.role,
                                               suite, order))
    return out


def task_info(name: str, document: dict[str, Any] | None = None) -> TaskInfo:
    """Registry facts for ``name``; a task the registry lacks keeps what its result file says."""
    known = _known().get(name)
    if known is not None:
        return known
    try:
        spec = get_task(name)
        return TaskInfo(spec.name, spec.meta_task, spec.role, "other", 10_000)
    except MMEBError:
        pass
    document = document or {}
    meta = str(document.get("meta_task", ""))
    role = result_role(document) or ""
    if meta not in META_TASKS or role not in ROLES:
        raise MMEBError(f"task {name!r} is not an MMEB or sample task and its result does not "
                        "name a meta-task and IND/OOD role; add them to the file or drop it")
    return TaskInfo(name, meta, role, "other", 10_000)


def suite_tasks(suite: str) -> tuple[TaskInfo, ...]:
    """The datasets that make a suite complete (empty for ``other``: nothing is expected)."""
    if suite not in SUITES:
        return ()
    return tuple(_known()[spec.name] for spec in _suite_tables()[suite])


def aggregate_groups() -> tuple[tuple[str, str], ...]:
    """(row name, kind) of the aggregate rows, in table order."""
    return (*((m, "meta_task") for m in META_TASKS), *((r, "role") for r in ROLES),
            ("overall", "overall"))


def in_group(info: TaskInfo, group: str, kind: str) -> bool:
    if kind == "meta_task":
        return info.meta_task == group
    if kind == "role":
        return info.role == group
    return True
