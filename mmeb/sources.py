"""Where a task's rows and images come from: one layout, several kinds of source.

Every source ends up as a folder ``<Task>/<prefix>-*.parquet`` in the MMEB-eval v1 schema plus an
image root the paths are relative to, described by a :class:`DataSource`. A task names its
source kind (``TaskSpec.source``); :data:`SOURCE_KINDS` maps each kind to the function that finds
that folder (downloading or generating it if needed). The functions are named as
``"module:function"`` strings and imported on first use, so listing tasks never imports the Hub
client or the sample generator. ``--data-dir`` bypasses the kind: a local folder of the same
layout serves any task.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmeb.errors import DataError
from mmeb.taskspec import TaskSpec

#: A source kind's resolver: (task, --image-dir or None) -> the task's DataSource.
Resolver = Callable[[TaskSpec, "Path | None"], "DataSource"]

SOURCE_KINDS: dict[str, str] = {
    "hub": "mmeb.hub:hub_source",
    "sample": "mmeb.sample.source:sample_source",
    "sample-full": "mmeb.sample.source:sample_source",
}


def register_source(kind: str, target: str) -> None:
    """Add a source kind: ``target`` is ``"module:function"`` with the :data:`Resolver`
    signature. Tasks whose ``source`` is ``kind`` are then read through it."""
    if ":" not in target:
        raise ValueError(f"source target {target!r} is not 'module:function'")
    SOURCE_KINDS[kind] = target


@dataclass
class DataSource:
    """Where a task's rows and images live, and what to record about them."""

    parquet_files: list[Path]
    image_root: Path
    kind: str  # "local" or the task's source kind
    revision: str | None = None  # Hub revision, when known
    sha256: str | None = None  # of the parquet bytes, set when they are read

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "files": [str(f) for f in self.parquet_files],
            "image_root": str(self.image_root),
            "revision": self.revision,
            "sha256": self.sha256,
        }


def find_parquet_files(task: TaskSpec, data_dir: Path) -> list[Path]:
    folder = data_dir / task.folder
    if not folder.is_dir():
        raise DataError(
            f"{task.name}: no folder {folder}; expected {data_dir}/<Task>/{task.file_prefix}-"
            "*.parquet (run `mmeb download` or check --data-dir)"
        )
    files = sorted(folder.glob(f"{task.file_prefix}-*.parquet")) or sorted(
        folder.glob("*.parquet")
    )
    if not files:
        raise DataError(f"{task.name}: no parquet file in {folder}")
    return files


def local_source(
    task: TaskSpec, data_dir: Path, image_dir: Path | None = None, *, kind: str = "local"
) -> DataSource:
    """A folder in the common layout; images under ``eval_images/`` unless ``image_dir``."""
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} does not exist")
    files = find_parquet_files(task, data_dir)
    image_root = image_dir if image_dir is not None else data_dir / "eval_images"
    return DataSource(files, image_root, kind)


def resolve_source(
    task: TaskSpec,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
) -> DataSource:
    """The local folder when ``data_dir`` is given, else the task's own source kind."""
    images = Path(image_dir) if image_dir is not None else None
    if data_dir is not None:
        return local_source(task, Path(data_dir), images)
    return resolver(task.source, task.name)(task, images)


def resolver(kind: str, task_name: str = "") -> Resolver:
    try:
        target = SOURCE_KINDS[kind]
    except KeyError:
        where = f"task {task_name} names " if task_name else ""
        raise DataError(
            f"{where}unknown source kind {kind!r}; known kinds: {', '.join(SOURCE_KINDS)} "
            "(register one with mmeb.sources.register_source, or pass --data-dir)"
        ) from None
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]
