"""A run: one model over a list of tasks, one result file per task, resumable.

Each finished task is written atomically before the next starts, so a crash or kill loses at most
the task in progress, and a rerun computes only what is missing. A result is reused only when it
was produced with the same settings (its fingerprint); otherwise the run stops and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmeb.encoder import Encoder, encoder_config
from mmeb.engine import SCORING_CONFIG, Evaluation, evaluate_task
from mmeb.errors import ResultsError
from mmeb.metrics import MAIN_METRIC
from mmeb.prefetch import DEFAULT_WORKERS
from mmeb.results import (
    SCHEMA_VERSION,
    Summary,
    format_summary,
    package_versions,
    read_result,
    result_path,
    summarize,
    utc_now,
    write_json_atomic,
)
from mmeb.shard import current_group
from mmeb.tasks import TaskSpec


@dataclass
class RunConfig:
    model: str  # the --model spec, or the encoder's name for an object passed in
    checkpoint: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 32
    limit: int | None = None
    data_dir: str | None = None
    image_dir: str | None = None
    output_dir: Path = Path("results")
    overwrite: bool = False
    name: str | None = None  # results folder name; derived from model + checkpoint if unset
    progress: bool = True
    prefetch: int = DEFAULT_WORKERS  # image-decoding threads, one batch ahead (0: off)
    cache_dir: str | None = None  # embedding cache (mmeb.embcache); None: no cache

    @property
    def model_id(self) -> str:
        if self.name:
            return self.name
        base = self.model.rpartition(":")[2] if ":" in self.model else self.model
        if self.checkpoint:
            return f"{base}-{Path(self.checkpoint.rstrip('/')).name}"
        return base

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the numbers (device and batch size do not)."""
        return {
            "model": self.model,
            "checkpoint": self.checkpoint,
            "model_args": dict(sorted(self.model_args.items())),
            "dtype": self.dtype,
            "limit": self.limit,
            "data_dir": os.path.abspath(self.data_dir) if self.data_dir else None,
            "image_dir": os.path.abspath(self.image_dir) if self.image_dir else None,
        }


@dataclass
class RunOutcome:
    results: list[dict[str, Any]]
    computed: list[str]
    skipped: list[str]

    @property
    def summary(self) -> Summary:
        return summarize(self.results)

    def table(self, fmt: str = "simple") -> str:
        return format_summary(self.summary, self.results, fmt)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".mmeb-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ResultsError(
            f"cannot write results to {folder} ({exc.strerror or exc}); choose --output-dir"
        ) from None


def build_document(
    evaluation: Evaluation, config: RunConfig, encoder: Encoder
) -> dict[str, Any]:
    task = evaluation.task
    return {
        "schema_version": SCHEMA_VERSION,
        "task": task.name,
        "model": config.model_id,
        "meta_task": task.meta_task,
        "role": task.role,
        "benchmark": task.benchmark,
        "main_metric": MAIN_METRIC,
        "main_score": evaluation.main_score,
        "metrics": evaluation.metrics,
        "chance": evaluation.chance,
        "counts": evaluation.counts,
        "warnings": evaluation.warnings,
        "notes": evaluation.notes,
        "config": {
            "adapter": {"name": encoder.name, **encoder_config(encoder)},
            "batch_size": config.batch_size,
            "device": config.device,
            "dtype": config.dtype,
            "scoring": SCORING_CONFIG,
        },
        "fingerprint": config.fingerprint(),
        "dataset": evaluation.dataset,
        "versions": package_versions(),
        "timings": evaluation.timings,
        "date": utc_now(),
    }


def run(
    config: RunConfig,
    tasks: Sequence[TaskSpec],
    *,
    encoder: Encoder | None = None,
    load_encoder: Callable[[], Encoder] | None = None,
    echo: Callable[[str], None] = lambda _msg: None,
) -> RunOutcome:
    """Evaluate ``tasks`` in order; the encoder is built only if some task needs computing.

    Under torchrun every process runs this; rank 0 alone reads and writes ``output_dir`` and
    decides which tasks to compute, the others only help encode (their outcome lists nothing).
    """
    if not tasks:
        raise ResultsError("no tasks selected")
    group = current_group()
    output_dir = Path(config.output_dir)
    if group.is_writer:
        check_writable(output_dir)
    results: list[dict[str, Any]] = []
    computed: list[str] = []
    skipped: list[str] = []
    cache = None
    for task in tasks:
        path = result_path(output_dir, config.model_id, task.name)
        done = group.broadcast(group.is_writer and path.exists() and not config.overwrite)
        if done and not group.is_writer:
            continue
        if done:
            document = read_result(path)
            _check_same_settings(document, config, path)
            results.append(document)
            skipped.append(task.name)
            echo(f"{task.name}: done earlier ({path})")
            continue
        if encoder is None:
            if load_encoder is None:
                raise ResultsError("no encoder given")
            encoder = load_encoder()
        if cache is None and config.cache_dir is not None:
            from mmeb.encoding import open_cache

            cache = open_cache(config.cache_dir, encoder, model=config.model,
                               checkpoint=config.checkpoint, model_args=config.model_args,
                               dtype=config.dtype)
        evaluation = evaluate_task(
            encoder, task, data_dir=config.data_dir, image_dir=config.image_dir,
            batch_size=config.batch_size, limit=config.limit, progress=config.progress,
            prefetch=config.prefetch, cache=cache,
        )
        if not group.is_writer:
            continue
        document = build_document(evaluation, config, encoder)
        write_json_atomic(path, document)
        results.append(document)
        computed.append(task.name)
        echo(f"{task.name}: {MAIN_METRIC} {100 * evaluation.main_score:.1f}% -> {path}")
    return RunOutcome(results, computed, skipped)


def _check_same_settings(document: dict[str, Any], config: RunConfig, path: Path) -> None:
    stored = document.get("fingerprint")
    current = config.fingerprint()
    if stored == current:
        return
    if not isinstance(stored, dict):
        raise ResultsError(f"{path} records no run settings; pass --overwrite to recompute it")
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    detail = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed)
    raise ResultsError(
        f"{path} was computed with other settings ({detail}); pass --overwrite to recompute "
        "or use another --output-dir / --name"
    )


def evaluate(
    encoder: Encoder,
    *,
    split: str | None = None,
    tasks: Sequence[str] | None = None,
    output_dir: str | os.PathLike[str] = "results",
    **options: Any,
) -> RunOutcome:
    """Evaluate an encoder object from Python: ``mmeb.evaluate(MyEncoder(), split="sample")``."""
    from mmeb.tasks import select_tasks

    config = RunConfig(model=encoder.name, output_dir=Path(output_dir), **options)
    return run(config, select_tasks(split, tasks), encoder=encoder)
