"""Reading MMEB-eval rows and turning them into unique items and per-query candidate lists.

One layout is read everywhere: ``<data_dir>/<Task>/*.parquet`` with the v1 columns
``qry_text, qry_img_path, tgt_text[], tgt_img_path[]`` (gold = candidate 0) and images under an
image root that the paths are relative to. The Hub copy, a user's local copy and the sample suite
all arrive in that layout, so they share this code.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmeb.errors import DataError
from mmeb.instructions import parse
from mmeb.items import Item
from mmeb.tasks import TaskSpec

EVAL_COLUMNS = {"qry_text": "string", "qry_img_path": "string",
                "tgt_text": "list<string>", "tgt_img_path": "list<string>"}


@dataclass
class DataSource:
    """Where a task's rows and images live, and what to record about them."""

    parquet_files: list[Path]
    image_root: Path
    kind: str  # "local", "hub" or "sample"
    revision: str | None = None  # Hub revision, when known

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for file in self.parquet_files:
            digest.update(file.read_bytes())
        return {
            "kind": self.kind,
            "files": [str(f) for f in self.parquet_files],
            "image_root": str(self.image_root),
            "revision": self.revision,
            "sha256": digest.hexdigest(),
        }


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


def find_parquet_files(task: TaskSpec, data_dir: Path) -> list[Path]:
    folder = data_dir / (task.hf_config or task.name)
    if not folder.is_dir():
        raise DataError(
            f"{task.name}: no folder {folder}; expected {data_dir}/<Task>/test-*.parquet "
            "(run `mmeb download` or check --data-dir)"
        )
    files = sorted(folder.glob(f"{task.hf_split}-*.parquet")) or sorted(folder.glob("*.parquet"))
    if not files:
        raise DataError(f"{task.name}: no parquet file in {folder}")
    return files


def local_source(task: TaskSpec, data_dir: Path, image_dir: Path | None = None) -> DataSource:
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} does not exist")
    files = find_parquet_files(task, data_dir)
    image_root = image_dir if image_dir is not None else data_dir / "eval_images"
    return DataSource(files, image_root, "local")


def read_rows(task: TaskSpec, source: DataSource) -> dict[str, list[Any]]:
    """Read and validate the v1 columns; returns column -> python list."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file in source.parquet_files:
        try:
            table = pq.read_table(file)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{task.name}: cannot read {file} ({exc})") from None
        _check_schema(task, file, table.schema)
        tables.append(table.select(list(EVAL_COLUMNS)))
    table = pa.concat_tables(tables)
    return {name: table.column(name).to_pylist() for name in EVAL_COLUMNS}


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


class _Interner:
    """Assigns one index per unique (raw, image path) and builds that item once."""

    def __init__(self, task: TaskSpec, image_root: Path, instruction: str | None) -> None:
        self.task = task
        self.root = image_root.resolve()
        self.instruction = instruction
        self.index: dict[tuple[str, str], int] = {}
        self.items: list[Item] = []

    def add(self, raw: str | None, rel_path: str | None, origin: str) -> int:
        raw = raw or ""
        rel_path = rel_path or ""
        key = (raw, rel_path)
        found = self.index.get(key)
        if found is not None:
            return found
        parsed = parse(raw, self.instruction)
        image_path = self._resolve(rel_path, origin) if rel_path else None
        self.items.append(
            Item(raw=raw, text=parsed.text, instruction=parsed.instruction,
                 image_path=image_path, origin=f"{self.task.name} {origin}")
        )
        self.index[key] = len(self.items) - 1
        return len(self.items) - 1

    def _resolve(self, rel_path: str, origin: str) -> str:
        path = (self.root / rel_path).resolve()
        if not path.is_relative_to(self.root):
            raise DataError(
                f"{self.task.name} {origin}: image path {rel_path!r} points outside the image "
                f"root {self.root}"
            )
        if not path.is_file():
            raise DataError(
                f"{self.task.name} {origin}: image not found: {path} (extract the images there "
                "or pass --image-dir)"
            )
        return str(path)


def build_inputs(
    task: TaskSpec, rows: dict[str, list[Any]], image_root: Path, limit: int | None = None
) -> TaskInputs:
    """Deduplicate queries and candidates, validate rows, keep the gold at position 0.

    A candidate list is treated as a set of contents: a repeat of an earlier candidate of the
    same row (same raw string and image) is dropped, so a copy of the gold can never be ranked
    apart from the gold.
    """
    total = len(rows["qry_text"])
    if total == 0:
        raise DataError(f"{task.name}: the data has no rows")
    n = total if limit is None else min(limit, total)
    queries = _Interner(task, image_root, task.query_instruction)
    targets = _Interner(task, image_root, task.target_instruction)
    query_index = np.empty(n, dtype=np.int64)
    lists: list[list[int]] = []
    dropped = 0
    for row in range(n):
        texts, paths = rows["tgt_text"][row] or [], rows["tgt_img_path"][row] or []
        if len(texts) != len(paths):
            raise DataError(
                f"{task.name} row {row}: tgt_text has {len(texts)} entries but tgt_img_path "
                f"has {len(paths)}; both lists must have one entry per candidate"
            )
        if not texts:
            raise DataError(f"{task.name} row {row}: empty candidate list")
        query_index[row] = queries.add(rows["qry_text"][row], rows["qry_img_path"][row],
                                       f"row {row} query")
        seen: dict[int, None] = {}
        for j, (text, path) in enumerate(zip(texts, paths, strict=False)):
            seen.setdefault(targets.add(text, path, f"row {row} candidate {j}"), None)
        dropped += len(texts) - len(seen)
        lists.append(list(seen))
    width = max(len(c) for c in lists)
    candidates = np.full((n, width), -1, dtype=np.int64)
    for row, cands in enumerate(lists):
        candidates[row, : len(cands)] = cands
    stats = {"duplicate_candidates_dropped": dropped,
             "instruction_unparsed_queries": sum(i.instruction is None for i in queries.items)}
    return TaskInputs(task, queries.items, targets.items, query_index, candidates, total, stats)


def load_task_inputs(
    task: TaskSpec,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> tuple[TaskInputs, DataSource]:
    source = resolve_source(task, data_dir=data_dir, image_dir=image_dir)
    rows = read_rows(task, source)
    return build_inputs(task, rows, source.image_root, limit), source


def resolve_source(
    task: TaskSpec,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
) -> DataSource:
    """Local data when ``data_dir`` is given, the generated suite for sample tasks, else the Hub."""
    images = Path(image_dir) if image_dir is not None else None
    if data_dir is not None:
        return local_source(task, Path(data_dir), images)
    if task.benchmark == "sample":
        from mmeb.sample import ensure_sample
        from mmeb.sample.spec import FULL_PREFIX

        scale = "full" if task.name.startswith(FULL_PREFIX) else "small"
        source = local_source(task, ensure_sample(scale) / "eval", images)
        source.kind = "sample"
        return source
    from mmeb.hub import hub_source

    return hub_source(task, image_dir=images)
