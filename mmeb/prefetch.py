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
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

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
