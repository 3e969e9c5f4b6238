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
from collections.abc import Callable, Iterator, Sequence
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
# The batches are the engine's, in order, so the vectors are those of ``encode``.


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


class _PreparedBatches:
    """Batch ``i`` of ``items`` (``batch_size`` each), preprocessed: a map-style dataset."""

    def __init__(self, items: Sequence[Item], batch_size: int, prepare: Callable[..., Any]
                 ) -> None:
        self.items, self.batch_size, self.prepare = items, batch_size, prepare

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def batch(self, index: int) -> Sequence[Item]:
        return self.items[index * self.batch_size : (index + 1) * self.batch_size]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.prepare(self.batch(index))
        except MMEBError as exc:
            return _Failed(exc)


def _as_is(prepared: Any) -> Any:
    return prepared


def iter_prepared(
    items: Sequence[Item], batch_size: int, prepare: Callable[..., Any], *, workers: int
) -> Iterator[tuple[Sequence[Item], Any]]:
    """``(batch, prepare(batch))`` for consecutive batches of ``items``, prepared by
    ``workers`` processes, at most two batches per worker ahead."""
    from torch.utils.data import DataLoader

    dataset = _PreparedBatches(items, batch_size, prepare)
    loader: Any = DataLoader(cast(Any, dataset), batch_size=None, shuffle=False,
                             num_workers=workers, collate_fn=_as_is, prefetch_factor=2)
    batches = iter(loader)
    try:
        for index, prepared in enumerate(batches):
            if isinstance(prepared, _Failed):
                raise prepared.error
            yield dataset.batch(index), prepared
    finally:
        del batches  # stops the workers, also after a failed batch
