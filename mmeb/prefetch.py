"""Decoding the next batch's images while the encoder works on the current one.

The engine hands the encoder items whose ``image`` is already decoded (``Item.decoded``), read
by a small thread pool one batch ahead. Pillow releases the GIL while it decodes and converts,
so the threads overlap with an encoder's forward pass (which releases it too: torch, numpy).
Memory stays bounded: at most the current batch and ``ahead`` further batches hold pixels.

Any encoder benefits without change. One that never looks at pixels (the random encoder,
text-only models) says so with ``reads_images = False`` and nothing is decoded for it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from mmeb.errors import MMEBError
from mmeb.items import Item
from mmeb.itemtable import any_image

DEFAULT_WORKERS = 2
"""Decoding threads of ``mmeb run`` (``--prefetch``); 0 decodes inside the encoder's call."""


def reads_images(encoder: object) -> bool:
    return bool(getattr(encoder, "reads_images", True))


def _decoded(item: Item) -> Item:
    if item.image_path is None or item.decoded is not None:
        return item
    return dataclasses.replace(item, decoded=item.image)  # DataError surfaces on .result()


def iter_batches(
    items: Sequence[Item], batch_size: int, *, workers: int = 0, ahead: int = 1
) -> Iterator[Sequence[Item]]:
    """``items`` in consecutive batches; with ``workers`` > 0 their images arrive decoded.

    Order and content are those of plain slicing: only where the pixels are read changes.
    """
    starts = range(0, len(items), batch_size)
    if workers <= 0 or not any_image(items):
        for start in starts:
            yield items[start : start + batch_size]
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmeb-decode")
    pending: deque[list[Future[Item]]] = deque()
    queued = iter(starts)

    def submit_next() -> None:
        start = next(queued, None)
        if start is not None:
            pending.append([pool.submit(_decoded, item)
                            for item in items[start : start + batch_size]])

    try:
        for _ in range(1 + ahead):
            submit_next()
        while pending:
            batch = [future.result() for future in pending.popleft()]
            submit_next()  # decoded while the caller encodes ``batch``
            yield batch
    finally:
        # A failed encode (or an early stop) must not leave threads decoding for nobody.
        pool.shutdown(wait=True, cancel_futures=True)


# -- preprocessing in worker processes --------------------------------------------------------
#
# An adapter that separates its preprocessing from its forward pass (``preprocessor`` and
# ``encode_prepared``; the VLM and two-tower bases) and is given ``preprocess_workers`` > 0
# (``--model-arg workers=N``) has its batches prepared by ``torch.utils.data.DataLoader``
# workers: they read, resize and tokenise the next batches while this process runs the model.
# The batches are the engine's, in order, so the vectors are those of ``encode``. The trainer
# builds its next steps' batches the same way (``vlm2vec train --data_workers N``).


def preprocess_workers(encoder: object) -> int:
    """Worker processes for ``encoder``'s preprocessing; 0 when it runs inside ``encode``."""
    if not callable(getattr(encoder, "preprocessor", None)):
        return 0
    return int(getattr(encoder, "preprocess_workers", 0) or 0)


class _Failed:
    """An MMEB error raised in a worker, carried back whole (DataLoader would re-raise it as
    a new exception with the worker's traceback in its message)."""

    def __init__(self, error: MMEBError) -> None:
        self.error = error


class _Indexed:
    """``task(indices[i])``: a map-style dataset whose MMEB errors come back whole."""

    def __init__(self, task: Callable[[int], Any], indices: Sequence[int]) -> None:
        self.task, self.indices = task, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Any:
        try:
            return self.task(self.indices[position])
        except MMEBError as exc:
            return _Failed(exc)


def _as_is(prepared: Any) -> Any:
    return prepared


def iter_in_workers(task: Callable[[int], Any], indices: Sequence[int], *, workers: int
                    ) -> Generator[Any, None, None]:
    """``task(i)`` for each of ``indices``, in order, computed ahead by ``workers`` processes
    (at most two results per worker wait). ``task`` must be picklable where worker processes
    are spawned rather than forked. An MMEB error raised in a worker is raised here,
    unchanged, when its result is due."""
    from torch.utils.data import DataLoader

    loader: Any = DataLoader(cast(Any, _Indexed(task, indices)), batch_size=None, shuffle=False,
                             num_workers=workers, collate_fn=_as_is, prefetch_factor=2)
    results = iter(loader)
    try:
        for result in results:
            if isinstance(result, _Failed):
                raise result.error
            yield result
    finally:
        del results  # stops the workers, also after a failed task


class _Batch:
    """``prepare`` of batch ``i`` of ``items`` (``batch_size`` each)."""

    def __init__(self, items: Sequence[Item], batch_size: int, prepare: Callable[..., Any]
                 ) -> None:
        self.items, self.batch_size, self.prepare = items, batch_size, prepare

    def __call__(self, index: int) -> Any:
        return self.prepare(self.items[index * self.batch_size : (index + 1) * self.batch_size])


def iter_prepared(
    items: Sequence[Item], batch_size: int, prepare: Callable[..., Any], *, workers: int
) -> Iterator[tuple[Sequence[Item], Any]]:
    """``(batch, prepare(batch))`` for consecutive batches of ``items``, prepared by
    ``workers`` processes, at most two batches per worker ahead."""
    count = -(-len(items) // batch_size)
    prepared = iter_in_workers(_Batch(items, batch_size, prepare), range(count),
                               workers=workers)
    try:
        for index, result in enumerate(prepared):
            yield items[index * batch_size : (index + 1) * batch_size], result
    finally:
        prepared.close()  # an early stop stops the workers now, not when collected
