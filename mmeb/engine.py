"""Evaluating one encoder on one task: encode each unique input once, score, measure."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmeb.data import TaskInputs, load_task_inputs
from mmeb.embcache import EmbeddingCache
from mmeb.encoder import Encoder, encoder_modalities, scores_chance
from mmeb.encoding import encode_side
from mmeb.errors import ModelError
from mmeb.items import Item, Side
from mmeb.itemtable import modalities_of
from mmeb.metrics import (
    MAIN_METRIC,
    TIE_ATOL,
    RankCounts,
    chance_hit1,
    l2_normalize,
    near_chance,
    rank_counts,
    summarize_metrics,
)
from mmeb.sources import DataSource
from mmeb.tasks import TaskSpec

log = logging.getLogger("mmeb")

TIE_POLICY = "expected"  # ties share credit: expected value under random tie-breaking


@dataclass
class Evaluation:
    """What evaluating one task produced, before it is written as a result."""

    task: TaskSpec
    metrics: dict[str, float]
    chance: float
    counts: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)  # doubts about the score itself
    notes: list[str] = field(default_factory=list)  # how the data differs from the reference
    dataset: dict[str, Any] = field(default_factory=dict)  # DataSource.describe() of the rows
    outcomes: RankCounts | None = None  # per query, in data row order

    @property
    def main_score(self) -> float:
        return self.metrics[MAIN_METRIC]


def check_modalities(encoder: Encoder, inputs: TaskInputs) -> None:
    accepted = encoder_modalities(encoder)
    for side, items in ((Side.QUERY, inputs.queries), (Side.TARGET, inputs.targets)):
        needed = modalities_of(items)
        missing = needed - accepted
        if missing:
            raise ModelError(
                f"model {encoder.name!r} cannot encode {'/'.join(sorted(missing))} {side} inputs "
                f"of task {inputs.task.name} (it accepts {', '.join(sorted(accepted))}); "
                "choose other tasks with --tasks or --split"
            )


def encode_in_batches(
    encoder: Encoder,
    items: Sequence[Item],
    *,
    side: Side,
    task: TaskSpec,
    batch_size: int,
    progress: bool = True,
    prefetch: int = 0,
) -> np.ndarray:
    """Encode ``items`` in batches of ``batch_size``; returns L2-normalised float64 vectors.

    The caller passes each input once (``TaskInputs`` holds unique items); this function does
    not deduplicate. ``prefetch`` threads decode the next batch's images meanwhile; an
    adapter with preprocessing workers has its batches prepared in those instead."""
    from mmeb.prefetch import iter_batches, iter_prepared, preprocess_workers
    from mmeb.progress import progress_bar

    # One array for all vectors, allocated once the first batch gives the width: no list of
    # per-batch arrays concatenated (a second full-size copy) at the end.
    vectors: np.ndarray | None = None
    done = 0
    bar = progress_bar(total=len(items), desc=f"{task.name} {side}s", enabled=progress)
    workers = preprocess_workers(encoder)
    stream: Iterator[tuple[Sequence[Item], Any]] = (
        iter_prepared(items, batch_size, encoder.preprocessor(side=side, task=task),  # type: ignore[attr-defined]
                      workers=workers)
        if workers else ((batch, None) for batch in iter_batches(items, batch_size,
                                                                  workers=prefetch)))
    try:
        for batch, prepared in stream:
            raw = (encoder.encode(batch, side=side, task=task) if prepared is None
                   else encoder.encode_prepared(prepared))  # type: ignore[attr-defined]
            out = _to_numpy(raw, encoder, side, task)
            if out.ndim != 2 or out.shape[0] != len(batch):
                raise ModelError(
                    f"model {encoder.name!r} returned shape {out.shape} for {len(batch)} "
                    f"{side} items of {task.name}; expected ({len(batch)}, d)"
                )
            if vectors is not None and out.shape[1] != vectors.shape[1]:
                raise ModelError(
                    f"model {encoder.name!r} returned {out.shape[1]}-d vectors after "
                    f"{vectors.shape[1]}-d ones on {task.name}"
                )
            _check_vectors(out, batch, encoder, side, task)
            if vectors is None:
                vectors = np.empty((len(items), out.shape[1]), dtype=np.float64)
            vectors[done : done + len(batch)] = l2_normalize(out)
            done += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
        if hasattr(stream, "close"):
            stream.close()  # a failed batch stops the decoding threads or worker processes
    return vectors if vectors is not None else np.zeros((0, 0))


def _to_numpy(out: Any, encoder: Encoder, side: Side, task: TaskSpec) -> np.ndarray:
    if hasattr(out, "detach"):  # a torch tensor; avoid importing torch here
        out = out.detach().float().cpu().numpy()
    try:
        return np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # ragged lists, None, strings...
        raise ModelError(
            f"model {encoder.name!r} returned {type(out).__name__} that is not an (n, d) array "
            f"of numbers for {side} items of {task.name} ({exc}); return one equal-length "
            "vector per item"
        ) from None


def _check_vectors(
    out: np.ndarray, batch: Sequence[Item], encoder: Encoder, side: Side, task: TaskSpec
) -> None:
    """Refuse vectors that cosine similarity cannot rank: scoring them would print a number
    that means nothing (an all-zero target ties with everything, a NaN with nothing)."""
    def fail(problem: str, rows: np.ndarray, fix: str) -> None:
        first = batch[int(np.flatnonzero(rows)[0])].origin
        raise ModelError(
            f"model {encoder.name!r} returned {problem} for {int(rows.sum())} {side} item(s) "
            f"of {task.name} (first: {first}); {fix}"
        )

    if out.shape[1] == 0:
        raise ModelError(
            f"model {encoder.name!r} returned zero-width (d=0) vectors for {side} items of "
            f"{task.name}; an embedding needs at least one dimension"
        )
    not_finite = ~np.isfinite(out).all(axis=1)
    if not_finite.any():
        fail("NaN or infinite values", not_finite, "check --dtype")
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(out, axis=1)
    if not np.isfinite(norms).all():
        fail("vectors whose norm overflows float64", ~np.isfinite(norms),
             "scale the outputs down")
    if (norms == 0).any():
        fail("all-zero (or vanishingly small) vectors", norms == 0,
             "an empty input or a broken pooling gives no direction to rank by")


def evaluate_inputs(
    encoder: Encoder, inputs: TaskInputs, *, batch_size: int = 32, progress: bool = True,
    prefetch: int = 0, cache: EmbeddingCache | None = None,
) -> Evaluation:
    task = inputs.task
    check_modalities(encoder, inputs)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    query_vecs = encode_side(encode_in_batches, encoder, inputs.queries, side=Side.QUERY,
                             task=task, batch_size=batch_size, progress=progress,
                             prefetch=prefetch, cache=cache)
    timings["encode_queries_s"] = time.perf_counter() - start
    start = time.perf_counter()
    target_vecs = encode_side(encode_in_batches, encoder, inputs.targets, side=Side.TARGET,
                              task=task, batch_size=batch_size, progress=progress,
                              prefetch=prefetch, cache=cache)
    timings["encode_targets_s"] = time.perf_counter() - start
    if query_vecs.shape[1] != target_vecs.shape[1]:
        raise ModelError(
            f"model {encoder.name!r} gave {query_vecs.shape[1]}-d queries but "
            f"{target_vecs.shape[1]}-d targets on {task.name}"
        )
    start = time.perf_counter()
    counts = rank_counts(query_vecs, target_vecs, inputs.query_index, inputs.candidates)
    metrics = summarize_metrics(counts)
    timings["score_s"] = time.perf_counter() - start
    chance = chance_hit1(counts)
    per_row = inputs.candidates_per_row
    result = Evaluation(
        task=task,
        metrics=metrics,
        chance=chance,
        counts={
            "rows": inputs.num_rows,
            "rows_in_data": inputs.num_rows_total,
            "unique_queries": len(inputs.queries),
            "unique_candidates": len(inputs.targets),
            "candidates_per_query": {"min": int(per_row.min()), "mean": float(per_row.mean()),
                                     "max": int(per_row.max())},
            "ties_with_gold": int((counts.tied > 0).sum()),
            "embedding_dim": int(query_vecs.shape[1]),
            **inputs.stats,
        },
        timings=timings,
        outcomes=counts,
    )
    result.notes.extend(_data_notes(inputs, int(per_row.max())))
    if near_chance(metrics[MAIN_METRIC], chance, inputs.num_rows) and not scores_chance(encoder):
        result.warnings.append(
            f"{task.name}: hit@1 {metrics[MAIN_METRIC]:.3f} is at chance level ({chance:.3f}); "
            "a correct adapter scores well above it: check preprocessing, pooling and fusion"
        )
    for message in result.warnings:
        log.warning(message)
    return result


def _data_notes(inputs: TaskInputs, widest: int) -> list[str]:
    """How the rows read differ from the task's reference sizes (a partial or edited copy)."""
    task = inputs.task
    notes = []
    if inputs.num_rows_total != task.num_queries:
        notes.append(f"{task.name}: data has {inputs.num_rows_total} rows, the reference "
                     f"{task.benchmark} task has {task.num_queries}")
    if widest != task.num_candidates:
        notes.append(f"{task.name}: up to {widest} distinct candidates per query, the "
                     f"reference lists {task.num_candidates}")
    return notes


def evaluate_task(
    encoder: Encoder,
    task: TaskSpec,
    *,
    data_dir: str | None = None,
    image_dir: str | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    source: DataSource | None = None,
    prefetch: int = 0,
    cache: EmbeddingCache | None = None,
) -> Evaluation:
    """Load ``task`` (local dir, sample suite or Hub cache, or ``source`` when the caller has
    resolved it already), encode and score it.

    ``prefetch`` threads decode images one batch ahead; ``cache`` supplies and keeps vectors
    (see mmeb.embcache); under torchrun the inputs are shared out (mmeb.shard)."""
    start = time.perf_counter()
    inputs, source = load_task_inputs(task, data_dir=data_dir, image_dir=image_dir, limit=limit,
                                      source=source)
    load_s = time.perf_counter() - start
    result = evaluate_inputs(encoder, inputs, batch_size=batch_size, progress=progress,
                             prefetch=prefetch, cache=cache)
    result.timings = {"load_s": load_s, **result.timings}
    result.dataset = source.describe()
    return result


SCORING_CONFIG = {
    "similarity": "cosine",
    "normalization": "l2",
    "tie_policy": TIE_POLICY,
    "tie_atol": TIE_ATOL,
    "candidate_duplicates": "dropped (one entry per distinct raw string + image)",
}
