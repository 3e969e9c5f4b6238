"""The unique inputs of one side of a task, held as columns; :class:`Item` objects on demand.

A task of 100k queries would otherwise hold 100k ``Item`` objects (four Python strings each)
for its whole evaluation. Here the raw strings and image paths stay in Arrow arrays (one
buffer each) and the per-input facts the engine asks about every input (has an image, has
text, carries the task's instruction) in numpy arrays; items are built per batch, when the
encoder needs them, and dropped with the batch.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from mmeb.instructions import parse
from mmeb.items import Item

#: Items built per step when a whole table is iterated (bounded memory, few Arrow calls).
_CHUNK = 4096


def resolve_image_path(root: str, rel_path: str) -> str:
    """The absolute path of ``rel_path`` (normalised, no null) under the resolved ``root``."""
    return os.path.normpath(os.path.join(root, rel_path))


def arrow_indices(positions: np.ndarray) -> Any:
    """An Arrow int64 array over ``positions`` (built from the buffer: no pandas import)."""
    import pyarrow as pa

    values = np.ascontiguousarray(positions, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


class ItemTable(Sequence[Item]):
    """Unique inputs of one side: ``table[i]`` and ``table[a:b]`` build :class:`Item` objects.

    ``raws`` and ``paths`` are null-free Arrow string arrays (``""`` = no image; paths relative
    to ``root`` and already validated), ``rows`` the data row each input first appears in and
    ``columns`` its candidate position there (None for queries), both for error messages.
    """

    def __init__(
        self, *, task_name: str, instruction: str | None, root: str, raws: Any, paths: Any,
        rows: np.ndarray, columns: np.ndarray | None, has_text: np.ndarray,
        parsed: np.ndarray, has_image: np.ndarray,
    ) -> None:
        self.task_name = task_name
        self.instruction = instruction
        self.root = root
        self.raws, self.paths = raws, paths
        self.rows, self.columns = rows, columns
        self.has_text, self.parsed, self.has_image = has_text, parsed, has_image

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> list[Item]: ...

    def __getitem__(self, index: int | slice) -> Item | list[Item]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._build(start, max(start, stop))
            return self._take(np.arange(start, stop, step))
        position = operator.index(index)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        return self._build(position, position + 1)[0]

    def __iter__(self) -> Iterator[Item]:
        for start in range(0, len(self), _CHUNK):
            yield from self._build(start, min(len(self), start + _CHUNK))

    def take(self, positions: np.ndarray) -> ItemTable:
        """The inputs at ``positions`` as a new (compact) table, in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        ids = arrow_indices(positions)
        return ItemTable(
            task_name=self.task_name, instruction=self.instruction, root=self.root,
            raws=self.raws.take(ids), paths=self.paths.take(ids), rows=self.rows[positions],
            columns=None if self.columns is None else self.columns[positions],
            has_text=self.has_text[positions], parsed=self.parsed[positions],
            has_image=self.has_image[positions],
        )

    def modalities(self) -> set[str]:
        """The modalities present (what ``{item.modality for item in table}`` would give)."""
        found = set()
        if (~self.has_image).any():
            found.add("text")
        if (self.has_image & self.has_text).any():
            found.add("image+text")
        if (self.has_image & ~self.has_text).any():
            found.add("image")
        return found

    def origin(self, position: int) -> str:
        row = int(self.rows[position])
        if self.columns is None:
            return f"{self.task_name} row {row} query"
        return f"{self.task_name} row {row} candidate {int(self.columns[position])}"

    def _build(self, start: int, stop: int) -> list[Item]:
        count = stop - start
        raws = self.raws.slice(start, count).to_pylist()
        paths = self.paths.slice(start, count).to_pylist()
        return [self._item(start + k, raw, path) for k, (raw, path) in
                enumerate(zip(raws, paths, strict=True))]

    def _take(self, positions: np.ndarray) -> list[Item]:
        ids = arrow_indices(positions)
        raws, paths = self.raws.take(ids).to_pylist(), self.paths.take(ids).to_pylist()
        return [self._item(int(p), raw, path) for p, raw, path in
                zip(positions.tolist(), raws, paths, strict=True)]

    def _item(self, position: int, raw: str, path: str) -> Item:
        parsed = parse(raw, self.instruction)
        return Item(raw=raw, text=parsed.text, instruction=parsed.instruction,
                    image_path=resolve_image_path(self.root, path) if path else None,
                    origin=self.origin(position))


def subset(items: Sequence[Item], positions: np.ndarray) -> Sequence[Item]:
    """``[items[i] for i in positions]``, kept columnar when ``items`` is a table."""
    if isinstance(items, ItemTable):
        return items.take(positions)
    return [items[i] for i in np.asarray(positions).tolist()]


def modalities_of(items: Sequence[Item]) -> set[str]:
    if isinstance(items, ItemTable):
        return items.modalities()
    return {item.modality for item in items}


def any_image(items: Sequence[Item]) -> bool:
    if isinstance(items, ItemTable):
        return bool(items.has_image.any())
    return any(item.image_path is not None for item in items)
