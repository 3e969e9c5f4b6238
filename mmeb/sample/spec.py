"""Task records of the sample suite (filled in by the generator's module)."""

from __future__ import annotations

from mmeb.tasks import TaskSpec

SAMPLE_TASKS: tuple[TaskSpec, ...] = ()
