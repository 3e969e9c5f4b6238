"""The sample suite as a data source: the cached copy, generated on first use."""

from __future__ import annotations

from pathlib import Path

from mmeb.sample.cache import ensure_sample
from mmeb.sample.spec import scale_of
from mmeb.sources import DataSource, local_source
from mmeb.taskspec import TaskSpec


def sample_source(task: TaskSpec, image_dir: Path | None = None) -> DataSource:
    root = ensure_sample(scale_of(task)) / "eval"
    return local_source(task, root, image_dir, kind=task.source)
