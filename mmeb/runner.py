"""A run: one model over a list of tasks, one result file per task, resumable.

Each finished task is written atomically before the next starts, so a crash or kill loses at most
the task in progress, and a rerun computes only what is missing. A result is reused only when it
was produced with the same settings (its fingerprint); otherwise the run stops and says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmeb import errors
from mmeb.data import parquet_sha256
from mmeb.encoder import Encoder, encoder_config, scores_chance
from mmeb.engine import SCORING_CONFIG, Evaluation, evaluate_task
from mmeb.errors import MMEBError, ResultsError
from mmeb.metrics import MAIN_METRIC, near_chance
from mmeb.prefetch import DEFAULT_WORKERS
from mmeb.registry import identity_model_args, model_identity
from mmeb.results import (
    SCHEMA_VERSION,
    Summary,
    encode_outcomes,
    format_summary,
    package_versions,
    read_result,
    remove_temporaries,
    result_path,
    safe_name,
    summarize,
    utc_now,
    write_json_atomic,
)
from mmeb.shard import ShardGroup, current_group
from mmeb.sources import DataSource, resolve_source
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
        """The settings that change the numbers (device and batch size do not).

        A stored result also records its data's sha256 and the encoder's config; see
        :func:`data_and_encoder`."""
        return {
            **model_identity(self.model),
            "checkpoint": self.checkpoint,
            "model_args": identity_model_args(self.model_args),
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


#: Less free space than this in the results folder is a full disk (a result is a few KiB).
MIN_FREE_BYTES = 1 << 20
#: Bytes the probe writes and syncs: enough that a full disk fails the probe, not the result.
_PROBE_BYTES = 64 << 10
LOCK_SUFFIX = ".lock"


def check_writable(folder: Path) -> None:
    """Make sure results can be written to ``folder`` before anything is computed."""
    probe = folder / ".mmeb-write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = os.statvfs(folder)
        if free.f_bavail * free.f_frsize < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, "no space left on the device")
        with open(probe, "wb") as handle:
            handle.write(b"\0" * _PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise ResultsError(
            f"cannot write results to {folder} ({exc.strerror or exc}); free space, fix the "
            "permissions or choose another --output-dir / --name"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for this process alone: one writer per results folder.

    An ``flock`` on ``.<folder>.lock`` beside the folder (so the folder holds only results);
    the kernel drops it when the holder exits, however it dies, so the lock of a killed run is
    free for the next one without any clean-up. The file keeps the holder's pid, for the message
    a second run gets.
    """
    import fcntl

    lock = folder.parent / f".{folder.name}{LOCK_SUFFIX}"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ResultsError(f"cannot create {lock} ({exc.strerror or exc}); choose another "
                           "--output-dir / --name") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ResultsError(
                f"{folder} is in use by another mmeb run (pid {holder}); wait for it to finish, "
                "or use another --output-dir / --name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


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
        "fingerprint": {**config.fingerprint(), **data_and_encoder(evaluation, encoder)},
        "dataset": evaluation.dataset,
        "versions": package_versions(),
        "timings": evaluation.timings,
        "date": utc_now(),
        **({"outcomes": encode_outcomes(evaluation.outcomes)}
           if evaluation.outcomes is not None else {}),
    }


def data_and_encoder(evaluation: Evaluation, encoder: Encoder) -> dict[str, Any]:
    """The fingerprint entries known once a task is computed: its data and the encoder's own
    settings."""
    return {"data_sha256": evaluation.dataset.get("sha256"),
            "encoder_config": encoder_config(encoder)}


#: One task of a run as planned: its spec, its data, and its stored result when reused.
Planned = tuple[TaskSpec, DataSource, "dict[str, Any] | None"]


def run(
    config: RunConfig,
    tasks: Sequence[TaskSpec],
    *,
    encoder: Encoder | None = None,
    load_encoder: Callable[[], Encoder] | None = None,
    echo: Callable[[str], None] = lambda _msg: None,
) -> RunOutcome:
    """Evaluate ``tasks`` in order; the encoder is built only if some task needs computing.

    Before anything is loaded or computed: the results folder is checked writable and locked,
    every task's data is found, and each stored result is checked against the current
    settings, data and (when known) encoder config. Then the model is loaded, if needed.

    Under torchrun every process runs this; rank 0 alone reads and writes the results folder
    and decides which tasks to compute, the others only help encode (their outcome lists
    nothing). A failure while planning, on any process, is raised on every process.
    """
    if not tasks:
        raise ResultsError("no tasks selected")
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ResultsError(f"task {repeated[0]} is listed twice; list each task once")
    group = current_group()
    with contextlib.ExitStack() as held:
        failure: Exception | None = None
        plan: list[Planned] = []
        try:
            if group.is_writer:
                folder = Path(config.output_dir) / safe_name(config.model_id)
                check_writable(folder)
                held.enter_context(folder_lock(folder))
                remove_temporaries(folder)  # left by a killed run; the only writer now
            plan = _plan(config, tasks, encoder, group)
        except Exception as exc:  # every process must hear of it (raise_on_every_rank)
            failure = exc
        raise_on_every_rank(group, failure, "while planning the run")
        return _execute(config, plan, encoder, load_encoder, echo, group)


def raise_on_every_rank(group: ShardGroup, failure: Exception | None, stage: str) -> None:
    """Raise ``failure`` on its process and the same one-line error on every other.

    Without this a process that fails alone leaves the others waiting forever in the next
    collective call. Every process calls it, failed or not; the failure of the lowest rank that
    failed is the one every process raises (an ``MMEBError`` keeps its class and message)."""
    if group.world == 1:
        if failure is not None:
            raise failure
        return
    record = None if failure is None else [type(failure).__name__, str(failure),
                                           isinstance(failure, MMEBError)]
    records = group.exchange(record)
    first = next(((rank, r) for rank, r in enumerate(records) if r is not None), None)
    if first is None:
        return
    rank, (kind, message, one_line) = first
    if rank == group.rank and failure is not None:
        raise failure
    if one_line:
        error_class = getattr(errors, kind, MMEBError)
        if not (isinstance(error_class, type) and issubclass(error_class, MMEBError)):
            error_class = MMEBError
        raise error_class(message)
    raise MMEBError(f"process {rank} of {group.world} failed {stage} ({kind}: {message}); "
                    "see its output for the traceback")


def _plan(
    config: RunConfig, tasks: Sequence[TaskSpec], encoder: Encoder | None, group: ShardGroup
) -> list[Planned]:
    """Each task's data and, on rank 0, its stored result (checked against the settings)."""
    settings = config.fingerprint()
    plan: list[Planned] = []
    for task in tasks:
        source = resolve_source(task, data_dir=config.data_dir, image_dir=config.image_dir)
        path = result_path(Path(config.output_dir), config.model_id, task.name)
        stored = None
        if group.is_writer and path.exists() and not config.overwrite:
            stored = read_result(path)
            current = {**settings, "data_sha256": parquet_sha256(source.parquet_files)}
            if encoder is not None:
                current["encoder_config"] = encoder_config(encoder)
            _check_same_settings(stored, current, path)
        plan.append((task, source, stored))
    return plan


def _execute(
    config: RunConfig,
    plan: Sequence[Planned],
    encoder: Encoder | None,
    load_encoder: Callable[[], Encoder] | None,
    echo: Callable[[str], None],
    group: ShardGroup,
) -> RunOutcome:
    # Every process follows rank 0's plan: which tasks are done, which are computed together.
    done = group.broadcast([stored is not None for _task, _source, stored in plan])
    if encoder is None and not all(done):
        if load_encoder is None:
            raise ResultsError("no encoder given")
        encoder = load_encoder()
        _check_reused_encoder(plan, encoder_config(encoder), config)

    results: list[dict[str, Any]] = []
    computed: list[str] = []
    skipped: list[str] = []
    cache = None
    for (task, source, stored), finished in zip(plan, done, strict=True):
        path = result_path(Path(config.output_dir), config.model_id, task.name)
        if finished and not group.is_writer:
            continue
        if stored is not None:
            results.append(stored)
            skipped.append(task.name)
            echo(f"{task.name}: done earlier ({path})")
            continue
        assert encoder is not None  # loaded above: some task needs computing
        if cache is None and config.cache_dir is not None:
            from mmeb.encoding import open_cache

            cache = open_cache(config.cache_dir, encoder, model=config.model,
                               checkpoint=config.checkpoint, model_args=config.model_args,
                               dtype=config.dtype)
        evaluation = evaluate_task(
            encoder, task, data_dir=config.data_dir, image_dir=config.image_dir,
            batch_size=config.batch_size, limit=config.limit, progress=config.progress,
            source=source, prefetch=config.prefetch, cache=cache,
        )
        if not group.is_writer:
            continue
        document = build_document(evaluation, config, encoder)
        try:
            write_json_atomic(path, document)
        except OSError as exc:
            raise ResultsError(
                f"cannot write {path} ({exc.strerror or exc}): {task.name} was computed "
                f"({MAIN_METRIC} {100 * evaluation.main_score:.2f}%) but not saved, and nothing "
                "half-written was left; free space and rerun (finished tasks are kept)"
            ) from None
        results.append(document)
        computed.append(task.name)
        echo(f"{task.name}: {MAIN_METRIC} {100 * evaluation.main_score:.1f}% -> {path}")
    if encoder is not None and scores_chance(encoder) and computed:
        echo(chance_summary(config.model_id, [r for r in results if r["task"] in computed]))
    return RunOutcome(results, computed, skipped)


def chance_summary(model_id: str, documents: Sequence[dict[str, Any]]) -> str:
    """One line for a model meant to score at chance, in place of a warning per task."""
    at = sum(near_chance(d["metrics"][MAIN_METRIC], d["chance"], d["counts"]["rows"])
             for d in documents)
    return (f"{model_id}: at chance level on {at} of {len(documents)} tasks, as a random "
            "baseline should be")


def _check_reused_encoder(
    plan: Sequence[Planned],
    current: dict[str, Any],
    config: RunConfig,
) -> None:
    """Results reused before the model was loaded must come from an encoder with its config."""
    for task, _source, stored in plan:
        if stored is None:
            continue
        path = result_path(Path(config.output_dir), config.model_id, task.name)
        _check_same_settings(stored, {**stored["fingerprint"], "encoder_config": current}, path)


def _short(value: Any) -> str:
    """A setting as the error shows it: a sha256 by its first 12 digits."""
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return f"{value[:12]}..."
    return repr(value)


def _check_same_settings(document: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """``current`` must equal the stored fingerprint on every key it holds (a key it lacks,
    like the config of an encoder not loaded yet, is checked once it is known)."""
    stored = document.get("fingerprint")
    if not isinstance(stored, dict):
        raise ResultsError(f"{path} records no run settings; pass --overwrite to recompute it")
    changed = sorted(k for k in current if stored.get(k) != current[k])
    if not changed:
        return
    detail = ", ".join(f"{k}: {_short(stored.get(k))} -> {_short(current[k])}" for k in changed)
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
