"""Reading MMEB-eval rows and turning them into unique items and per-query candidate lists.

One layout is read everywhere: ``<data_dir>/<Task>/*.parquet`` with the v1 columns
``qry_text, qry_img_path, tgt_text[], tgt_img_path[]`` (gold = candidate 0) and images under an
image root that the paths are relative to. Every source (:mod:`mmeb.sources`: the Hub copy, a
user's local copy, the sample suite) arrives in that layout, so they share this code.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmeb.arrow_np import int_scalar, int_to_numpy, large_string_scalar
from mmeb.errors import DataError
from mmeb.instructions import parse
from mmeb.items import Item
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
    queries: list[Item]  # unique query items
    targets: list[Item]  # unique candidate items
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


def read_rows(task: TaskSpec, source: DataSource) -> Any:
    """Read and validate the v1 columns of every file; returns one pyarrow table.

    Each file is read from disk once: the same bytes are parsed and hashed (the hash goes into
    ``source.sha256`` and from there into the result).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    target = pa.schema([(name, _arrow_types()[kind]) for name, kind in EVAL_COLUMNS.items()])
    tables = []
    for file in source.parquet_files:
        data = file.read_bytes()
        digest.update(data)
        try:
            parquet = pq.ParquetFile(pa.BufferReader(data))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{task.name}: cannot read {file} ({exc})") from None
        _check_schema(task, file, parquet.schema_arrow)
        try:  # a valid footer says nothing about the data pages after it
            table = parquet.read(columns=list(EVAL_COLUMNS)).cast(target)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"{task.name}: cannot read the rows of {file} ({exc}); the file is damaged: "
                "re-download it"
            ) from None
        _check_utf8(task, file, table)
        tables.append(table)
    source.sha256 = digest.hexdigest()
    return pa.concat_tables(tables)


def parquet_sha256(files: list[Path]) -> str:
    """The sha256 :func:`read_rows` records for ``files``, from their bytes alone (no parsing)."""
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


class _ItemMaker:
    """Builds the item of one unique (raw, image path), resolving the path inside the root."""

    def __init__(self, task: TaskSpec, image_root: Path, instruction: str | None) -> None:
        self.task = task
        self.root = os.path.realpath(image_root)
        self.instruction = instruction

    def __call__(self, raw: str, rel_path: str, origin: str) -> Item:
        parsed = parse(raw, self.instruction)
        return Item(raw=raw, text=parsed.text, instruction=parsed.instruction,
                    image_path=self._resolve(rel_path, origin) if rel_path else None,
                    origin=f"{self.task.name} {origin}")

    def _resolve(self, rel_path: str, origin: str) -> str:
        # Paths arrive normalised by _factorize (one spelling per image), so this join is exact.
        # normpath, not realpath: the check is about "../" in the data, and resolving every
        # path through the file system would cost more than reading the rows.
        path = os.path.normpath(os.path.join(self.root, rel_path))
        if not path.startswith(self.root + os.sep):
            raise DataError(
                f"{self.task.name} {origin}: image path {rel_path!r} points outside the image "
                f"root {self.root}"
            )
        if not os.path.isfile(path):
            if not os.path.isdir(self.root):
                raise DataError(
                    f"{self.task.name} {origin}: the image folder {self.root} does not exist "
                    "(extract images.zip there, or pass --image-dir)"
                )
            raise DataError(
                f"{self.task.name} {origin}: image not found: {path} (extract the images there "
                "or pass --image-dir)"
            )
        return path


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
    task: TaskSpec, table: Any, image_root: Path, limit: int | None = None
) -> TaskInputs:
    """Deduplicate queries and candidates, validate rows, keep the gold at position 0.

    A candidate list is treated as a set of contents: a repeat of an earlier candidate of the
    same row (same raw string and image) is dropped, so a copy of the gold can never be ranked
    apart from the gold. The work is columnar (pyarrow, numpy): a 1000 x 1000 task never
    touches a million Python objects.
    """
    total = table.num_rows
    if total == 0:
        raise DataError(f"{task.name}: the data has no rows")
    n = total if limit is None else min(limit, total)
    table = table.slice(0, n)
    tgt_text = table.column("tgt_text").combine_chunks()
    tgt_path = table.column("tgt_img_path").combine_chunks()
    lengths, path_lengths = (_list_lengths(tgt_text), _list_lengths(tgt_path))
    _check_lengths(task, lengths, path_lengths)

    qry_text = table.column("qry_text").combine_chunks()
    qry_path = table.column("qry_img_path").combine_chunks()
    qry_norm = normalize_paths(qry_path)  # image identity must not depend on its spelling
    query_index, query_first = _factorize(qry_text, qry_norm)
    make_query = _ItemMaker(task, image_root, task.query_instruction)
    queries = [make_query(qry_text[i].as_py() or "", qry_norm[i].as_py(),
                          f"row {i} query") for i in query_first.tolist()]

    flat_text, flat_path = tgt_text.flatten(), normalize_paths(tgt_path.flatten())
    codes, target_first = _factorize(flat_text, flat_path)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    row_of = np.repeat(np.arange(n), lengths)
    make_target = _ItemMaker(task, image_root, task.target_instruction)
    targets = []
    for pos in target_first.tolist():
        row = int(row_of[pos])
        targets.append(make_target(flat_text[pos].as_py() or "", flat_path[pos].as_py(),
                                   f"row {row} candidate {pos - offsets[row]}"))
    _check_not_empty(queries)
    _check_not_empty(targets)

    # Keep the first occurrence of each (row, code) pair, in the row's own order.
    _, first_in_row = np.unique(row_of * len(target_first) + codes, return_index=True)
    keep = np.zeros(len(codes), dtype=bool)
    keep[first_in_row] = True
    kept_rows, kept_codes = row_of[keep], codes[keep]
    per_row = np.bincount(kept_rows, minlength=n)
    column = np.arange(len(kept_rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    candidates = np.full((n, int(per_row.max())), -1, dtype=np.int64)
    candidates[kept_rows, column] = kept_codes
    stats = {"duplicate_candidates_dropped": int(len(codes) - keep.sum()),
             "instruction_unparsed_queries": sum(q.instruction is None for q in queries)}
    return TaskInputs(task, queries, targets, query_index, candidates, total, stats)


def _check_not_empty(items: list[Item]) -> None:
    """An input with neither text nor image would be encoded as whatever the model makes of
    nothing; refuse it before encoding, naming the first such row."""
    for item in items:
        if not item.has_image and not item.text.strip():
            raise DataError(
                f"{item.origin}: empty input (no text and no image; raw string {item.raw!r}); "
                "fix or drop the row in the data"
            )


def _list_lengths(lists: Any) -> np.ndarray:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(lists)
    return int_to_numpy(pc.fill_null(lengths, int_scalar(0, lengths.type)))


def _check_lengths(task: TaskSpec, lengths: np.ndarray, path_lengths: np.ndarray) -> None:
    mismatch = np.nonzero(lengths != path_lengths)[0]
    if mismatch.size:
        row = int(mismatch[0])
        raise DataError(
            f"{task.name} row {row}: tgt_text has {lengths[row]} entries but tgt_img_path "
            f"has {path_lengths[row]}; both lists must have one entry per candidate"
        )
    empty = np.nonzero(lengths == 0)[0]
    if empty.size:
        raise DataError(f"{task.name} row {int(empty[0])}: empty candidate list")


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
    rows = read_rows(task, source)
    return build_inputs(task, rows, source.image_root, limit), source
