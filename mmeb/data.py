"""Reading MMEB-eval rows and turning them into unique items and per-query candidate lists.

One layout is read everywhere: ``<data_dir>/<Task>/*.parquet`` with the v1 columns
``qry_text, qry_img_path, tgt_text[], tgt_img_path[]`` (gold = candidate 0) and images under an
image root that the paths are relative to. Every source (:mod:`mmeb.sources`: the Hub copy, a
user's local copy, the sample suite) arrives in that layout, so they share this code.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmeb.arrow_np import int_scalar, int_to_numpy, large_string_scalar
from mmeb.errors import DataError
from mmeb.instructions import parse
from mmeb.items import Item
from mmeb.itemtable import ItemTable, arrow_indices, resolve_image_path
from mmeb.memory import release_freed_memory, use_system_memory_pool
from mmeb.sources import DataSource, resolve_source
from mmeb.taskspec import TaskSpec

EVAL_COLUMNS = {"qry_text": "string", "qry_img_path": "string",
                "tgt_text": "list<string>", "tgt_img_path": "list<string>"}


def _arrow_types() -> dict[str, Any]:
    import pyarrow as pa

    return {"string": pa.large_string(), "list<string>": pa.large_list(pa.large_string())}


@dataclass
class TaskInputs:
    """A task ready for encoding: each unique input once, rows as index arrays."""

    task: TaskSpec
    queries: Sequence[Item]  # unique query items (an ItemTable: built per batch)
    targets: Sequence[Item]  # unique candidate items
    query_index: np.ndarray  # (rows,) -> index into queries
    candidates: np.ndarray  # (rows, max_candidates) -> index into targets, -1 = padding
    num_rows_total: int  # rows in the data before --limit
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return len(self.query_index)

    @property
    def candidates_per_row(self) -> np.ndarray:
        return (self.candidates >= 0).sum(axis=1)


#: Rows decoded and deduplicated per step: the memory for reading follows this, not the task.
ROW_BATCH = 2048


def _target_schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, _arrow_types()[kind]) for name, kind in EVAL_COLUMNS.items()])


def _check_files(task: TaskSpec, source: DataSource) -> int:
    """Open every file and check its columns before any row is read; returns the rows in all.

    Records the files' sha256 in ``source.sha256`` (and from there in the result)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    total = 0
    for file in source.parquet_files:
        try:
            with pq.ParquetFile(file) as parquet:
                _check_schema(task, file, parquet.schema_arrow)
                total += parquet.metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{task.name}: cannot read {file} ({exc})") from None
    source.sha256 = parquet_sha256(source.parquet_files)
    return total


def _row_batches(task: TaskSpec, source: DataSource) -> Iterator[Any]:
    """The v1 columns of every file, in order, as validated tables of at most ROW_BATCH rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = _target_schema()
    for file in source.parquet_files:
        # Streamed, not pre-buffered, one thread: only the pages of the current batch are held.
        with pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 16) as parquet:
            batches = parquet.iter_batches(batch_size=ROW_BATCH, columns=list(EVAL_COLUMNS),
                                           use_threads=False)
            while True:
                try:  # a valid footer says nothing about the data pages after it
                    batch = next(batches, None)
                    if batch is None:
                        break
                    table = pa.Table.from_batches([batch]).cast(target)
                except (OSError, pa.ArrowException) as exc:
                    raise DataError(
                        f"{task.name}: cannot read the rows of {file} ({exc}); the file is "
                        "damaged: re-download it"
                    ) from None
                _check_utf8(task, file, table)
                yield table


def parquet_sha256(files: list[Path]) -> str:
    """The sha256 of ``files``' bytes, in order (what a result records as the data's identity)."""
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_utf8(task: TaskSpec, file: Path, table: Any) -> None:
    """Parquet readers pass string bytes through unchecked; bad UTF-8 would fail much later."""
    import pyarrow as pa

    for name in table.column_names:
        try:
            table.column(name).validate(full=True)
        except pa.ArrowInvalid as exc:
            raise DataError(
                f"{task.name}: {file} column {name!r} is not valid UTF-8 ({exc}); re-encode "
                "the file's text as UTF-8"
            ) from None


def _check_schema(task: TaskSpec, file: Path, schema: Any) -> None:
    import pyarrow as pa

    for name, kind in EVAL_COLUMNS.items():
        if name not in schema.names:
            raise DataError(
                f"{task.name}: {file} lacks column {name!r}; an MMEB-eval v1 file has "
                f"{', '.join(EVAL_COLUMNS)}"
            )
        arrow_type = schema.field(name).type
        ok = (
            pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
            if kind == "string"
            else (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type))
            and (pa.types.is_string(arrow_type.value_type)
                 or pa.types.is_large_string(arrow_type.value_type))
        )
        if not ok:
            raise DataError(f"{task.name}: {file} column {name!r} is {arrow_type}, expected {kind}")


class _Side:
    """The unique (raw string, image path) inputs of one side, gathered batch by batch.

    Each batch is deduplicated on its own (columnar); only its unique inputs are kept, with
    the batch's codes into them. :meth:`finish` deduplicates those across batches and maps
    every batch's codes to the final ones (order of first appearance in the data)."""

    def __init__(self) -> None:
        self.raws: list[Any] = []  # per batch: its unique raw strings (Arrow)
        self.paths: list[Any] = []  # ... their normalised image paths ("" = none)
        self.rows: list[np.ndarray] = []  # ... the data row of each one's first appearance
        self.columns: list[np.ndarray] = []  # ... its candidate position in that row
        self.codes: list[np.ndarray] = []  # per batch: codes into that batch's unique inputs

    def add(self, texts: Any, paths: Any, rows: np.ndarray, columns: np.ndarray | None
            ) -> np.ndarray:
        """Add one batch (``paths`` normalised); returns the batch-local codes."""
        import pyarrow.compute as pc

        codes, first = _factorize(texts, paths)
        ids = arrow_indices(first)
        self.raws.append(pc.fill_null(texts, large_string_scalar("")).take(ids))
        self.paths.append(paths.take(ids))
        self.rows.append(rows[first])
        self.columns.append(columns[first] if columns is not None else np.zeros(0, np.int64))
        return codes

    def keep_codes(self, codes: np.ndarray) -> None:
        self.codes.append(codes.astype(np.int32 if len(codes) < 2**31 else np.int64))

    def finish(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        """The unique inputs' columns, and each batch's kept codes mapped to them."""
        import pyarrow as pa

        raws, paths = pa.concat_arrays(self.raws), pa.concat_arrays(self.paths)
        codes, first = _factorize(raws, paths)
        ids = arrow_indices(first)
        columns = {"raws": raws.take(ids), "paths": paths.take(ids),
                   "rows": np.concatenate(self.rows)[first],
                   "columns": np.concatenate(self.columns)[first]
                   if sum(len(c) for c in self.columns) else None}
        mapped, offset = [], 0
        for batch_raws, batch_codes in zip(self.raws, self.codes, strict=True):
            mapped.append(codes[offset: offset + len(batch_raws)][batch_codes])
            offset += len(batch_raws)
        return columns, mapped


def _item_table(task: TaskSpec, root: str, instruction: str | None, columns: dict[str, Any],
                side: str) -> ItemTable:
    """Validate the unique inputs of one side (image inside the root and present, not empty)
    and record what the engine asks of every input, without keeping any Item."""
    size = len(columns["rows"])
    has_text = np.zeros(size, dtype=bool)
    parsed = np.zeros(size, dtype=bool)
    has_image = np.zeros(size, dtype=bool)
    cols = columns["columns"]
    for start in range(0, size, ROW_BATCH):
        stop = min(size, start + ROW_BATCH)
        raws = columns["raws"].slice(start, stop - start).to_pylist()
        paths = columns["paths"].slice(start, stop - start).to_pylist()
        for k, (raw, rel) in enumerate(zip(raws, paths, strict=True)):
            i = start + k
            row = int(columns["rows"][i])
            where = f"row {row} query" if side == "query" else f"row {row} candidate {cols[i]}"
            text = parse(raw, instruction)
            has_text[i] = bool(text.text)
            parsed[i] = text.instruction is not None
            has_image[i] = bool(rel)
            if rel:
                _check_image(task, root, rel, where)
            elif not text.text:
                # An input with neither text nor image would be encoded as whatever the model
                # makes of nothing; refuse it before encoding.
                raise DataError(
                    f"{task.name} {where}: empty input (no text and no image; raw string "
                    f"{raw!r}); fix or drop the row in the data"
                )
    return ItemTable(task_name=task.name, instruction=instruction, root=root,
                     raws=columns["raws"], paths=columns["paths"], rows=columns["rows"],
                     columns=cols, has_text=has_text, parsed=parsed, has_image=has_image)


def _check_image(task: TaskSpec, root: str, rel_path: str, where: str) -> None:
    # Paths arrive normalised (one spelling per image), so the join is exact. normpath, not
    # realpath: the check is about "../" in the data, and resolving every path through the
    # file system would cost more than reading the rows.
    path = resolve_image_path(root, rel_path)
    if not path.startswith(root + os.sep):
        raise DataError(
            f"{task.name} {where}: image path {rel_path!r} points outside the image root {root}"
        )
    if not os.path.isfile(path):
        if not os.path.isdir(root):
            raise DataError(
                f"{task.name} {where}: the image folder {root} does not exist (extract "
                "images.zip there, or pass --image-dir)"
            )
        raise DataError(
            f"{task.name} {where}: image not found: {path} (extract the images there or pass "
            "--image-dir)"
        )


def _factorize(texts: Any, paths: Any) -> tuple[np.ndarray, np.ndarray]:
    """Codes of unique (text, path) pairs in order of first appearance, and those positions.

    ``paths`` are compared as strings: pass them through :func:`normalize_paths` first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # NUL cannot occur in a path, so text + NUL + path identifies the pair.
    separator, empty = large_string_scalar("\0"), large_string_scalar("")
    keys = pc.binary_join_element_wise(pc.fill_null(texts, empty), pc.fill_null(paths, empty),
                                       separator)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    codes = int_to_numpy(keys.dictionary_encode().indices)
    _, first = np.unique(codes, return_index=True)  # dictionary order = first appearance
    return codes, first


def normalize_paths(paths: Any) -> Any:
    """One spelling per image path (``a/./x.png``, ``a//x.png`` -> ``a/x.png``; null -> "").

    Only the distinct strings are normalised, then mapped back through their dictionary codes,
    so the cost follows the number of distinct paths, not of rows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(paths, pa.ChunkedArray):
        paths = paths.combine_chunks()
    # An Arrow-built "" keeps pyarrow from converting a Python value (which imports pandas).
    encoded = pc.fill_null(paths, large_string_scalar("")).dictionary_encode()
    spelled = encoded.dictionary.to_pylist()
    normal = [os.path.normpath(p) if p else "" for p in spelled]
    if normal == spelled:
        return encoded.dictionary.take(encoded.indices)
    return pa.array(normal, pa.large_string()).take(encoded.indices)


def build_inputs(
    task: TaskSpec, source: DataSource, limit: int | None = None
) -> TaskInputs:
    """Read the rows batch by batch; deduplicate queries and candidates, validate rows, keep
    the gold at position 0.

    A candidate list is treated as a set of contents: a repeat of an earlier candidate of the
    same row (same raw string and image) is dropped, so a copy of the gold can never be ranked
    apart from the gold. The work is columnar (pyarrow, numpy) and per batch of rows: what
    stays is the unique inputs as columns and the rows as index arrays, so memory beyond those
    does not grow with the number of rows.
    """
    total = _check_files(task, source)
    if total == 0:
        raise DataError(f"{task.name}: the data has no rows")
    n = total if limit is None else min(limit, total)
    queries, targets = _Side(), _Side()
    per_row_parts: list[np.ndarray] = []
    dropped = 0
    start = 0
    for table in _row_batches(task, source):
        # Every file is read to its end (its pages validated) even past --limit.
        rows = min(table.num_rows, n - start)
        if rows > 0:
            dropped += _add_batch(task, table.slice(0, rows), start, queries, targets,
                                  per_row_parts)
        start += table.num_rows
    root = os.path.realpath(source.image_root)
    query_columns, query_codes = queries.finish()
    target_columns, kept_codes = targets.finish()
    query_items = _item_table(task, root, task.query_instruction, query_columns, "query")
    target_items = _item_table(task, root, task.target_instruction, target_columns, "target")
    query_index = np.concatenate(query_codes).astype(np.int64)
    stats = {"duplicate_candidates_dropped": dropped,
             "instruction_unparsed_queries": int((~query_items.parsed).sum())}
    return TaskInputs(task, query_items, target_items, query_index,
                      _candidate_matrix(kept_codes, per_row_parts), total, stats)


def _candidate_matrix(codes: list[np.ndarray], per_row: list[np.ndarray]) -> np.ndarray:
    """Each row's kept candidate codes, left-aligned, padded with -1 (filled batch by batch:
    no temporaries the size of all candidates)."""
    rows = sum(len(counts) for counts in per_row)
    width = max(int(counts.max()) for counts in per_row)
    matrix = np.full((rows, width), -1, dtype=np.int64)
    start = 0
    for batch_codes, counts in zip(codes, per_row, strict=True):
        column = np.arange(len(batch_codes)) - np.repeat(np.cumsum(counts) - counts, counts)
        matrix[start + np.repeat(np.arange(len(counts)), counts), column] = batch_codes
        start += len(counts)
    return matrix


def _add_batch(task: TaskSpec, table: Any, first_row: int, queries: _Side, targets: _Side,
               per_row_parts: list[np.ndarray]) -> int:
    """Deduplicate one batch of rows into ``queries`` and ``targets``; returns the number of
    repeated candidates dropped."""
    n = table.num_rows
    tgt_text = table.column("tgt_text").combine_chunks()
    tgt_path = table.column("tgt_img_path").combine_chunks()
    lengths, path_lengths = (_list_lengths(tgt_text), _list_lengths(tgt_path))
    _check_lengths(task, lengths, path_lengths, first_row)

    qry_text = table.column("qry_text").combine_chunks()
    # Image identity must not depend on how the path is spelled.
    qry_norm = normalize_paths(table.column("qry_img_path"))
    queries.keep_codes(queries.add(qry_text, qry_norm, first_row + np.arange(n), None))

    flat_text, flat_path = tgt_text.flatten(), normalize_paths(tgt_path.flatten())
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    row_of = np.repeat(np.arange(n), lengths)
    codes = targets.add(flat_text, flat_path, first_row + row_of,
                        np.arange(len(row_of)) - offsets[row_of])
    # Keep the first occurrence of each (row, code) pair, in the row's own order.
    _, first_in_row = np.unique(row_of * (int(codes.max()) + 1) + codes, return_index=True)
    keep = np.zeros(len(codes), dtype=bool)
    keep[first_in_row] = True
    targets.keep_codes(codes[keep])
    per_row_parts.append(np.bincount(row_of[keep], minlength=n))
    return int(len(codes) - keep.sum())


def _list_lengths(lists: Any) -> np.ndarray:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(lists)
    return int_to_numpy(pc.fill_null(lengths, int_scalar(0, lengths.type)))


def _check_lengths(task: TaskSpec, lengths: np.ndarray, path_lengths: np.ndarray,
                   first_row: int) -> None:
    mismatch = np.nonzero(lengths != path_lengths)[0]
    if mismatch.size:
        row = int(mismatch[0])
        raise DataError(
            f"{task.name} row {first_row + row}: tgt_text has {lengths[row]} entries but "
            f"tgt_img_path has {path_lengths[row]}; both lists must have one entry per candidate"
        )
    empty = np.nonzero(lengths == 0)[0]
    if empty.size:
        raise DataError(f"{task.name} row {first_row + int(empty[0])}: empty candidate list")


def load_task_inputs(
    task: TaskSpec,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    source: DataSource | None = None,
) -> tuple[TaskInputs, DataSource]:
    """Rows of ``task`` as :class:`TaskInputs`; ``source`` when the caller resolved it already."""
    if source is None:
        source = resolve_source(task, data_dir=data_dir, image_dir=image_dir)
    use_system_memory_pool()
    inputs = build_inputs(task, source, limit)
    release_freed_memory()  # the batches' buffers, before the encoder's vectors arrive
    return inputs, source
