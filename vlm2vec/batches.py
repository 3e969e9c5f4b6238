"""What one training step's forward passes read, built from the step number alone.

The pairs of a step follow from the seed and the step (``batch_pairs``), their picture shifts
from the seed, step and rank (``augment_shift``), and their collation from the model's
``collator``. So the batches can be built ahead of time in worker processes
(``data_workers``) and are the same as those built in the training process, step for step;
a resumed run builds from its checkpoint's step on.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from vlm2vec.augment import shift_pairs
from vlm2vec.data import Input, Pair, PairStream, TrainData, batch_pairs
from vlm2vec.gradcache import Sides

Collate = Callable[[Sequence[Input], str], dict[str, Any]]


class StepInputs:
    """``self(step)``: the collated sides of a step, one per GradCache chunk (a single one
    without GradCache). Picklable when its collator is."""

    def __init__(self, data: TrainData, stream: PairStream, collate: Collate, *,
                 global_batch: int, chunk: int, shift: int, seed: int, rank: int,
                 world: int) -> None:
        self.data, self.stream, self.collate = data, stream, collate
        self.global_batch, self.chunk, self.shift = global_batch, chunk, shift
        self.seed, self.rank, self.world = seed, rank, world

    def pairs(self, step: int) -> list[Pair]:
        """This process's pairs of ``step`` (unshifted: content keys name the files)."""
        return batch_pairs(self.data, self.stream, step, self.global_batch, self.rank,
                           self.world)

    def prepare(self, pairs: list[Pair], step: int) -> list[Sides]:
        if self.shift:
            # Drawn from (seed, step, rank): a resumed run shifts as the uninterrupted one.
            rng = np.random.default_rng([self.seed, step, self.rank])
            pairs = shift_pairs(pairs, self.shift, rng)
        size = self.chunk if self.chunk and self.chunk < len(pairs) else len(pairs)
        return [self.sides(pairs[i : i + size]) for i in range(0, len(pairs), size)]

    def sides(self, pairs: list[Pair]) -> Sides:
        out = {"query": self.collate([p.query for p in pairs], "query"),
               "target": self.collate([p.target for p in pairs], "target")}
        negatives = [p.negative for p in pairs if p.negative is not None]
        if negatives:
            out["negative"] = self.collate(negatives, "negative")
        return out

    def __call__(self, step: int) -> list[Sides]:
        return self.prepare(self.pairs(step), step)


def step_batches(inputs: StepInputs, steps: range, workers: int
                 ) -> Generator[tuple[list[Pair], list[Sides] | None], None, None]:
    """``(pairs, prepared)`` for each of ``steps``: ``prepared`` comes from ``workers``
    processes, built ahead, or is None (built by the caller) when ``workers`` is 0."""
    if not workers:
        for step in steps:
            yield inputs.pairs(step), None
        return
    from mmeb.prefetch import iter_in_workers

    ahead = iter_in_workers(inputs, steps, workers=workers)
    try:
        for step, prepared in zip(steps, ahead, strict=True):
            yield inputs.pairs(step), prepared
    finally:
        ahead.close()  # stops the workers when training stops early or fails
