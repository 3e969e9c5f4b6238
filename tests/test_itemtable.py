"""Unique inputs held as columns: reading in batches changes nothing a caller can see."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from mmeb_fixtures import class_row, write_image, write_rows

import mmeb.data as data
from mmeb.data import load_task_inputs
from mmeb.errors import DataError
from mmeb.itemtable import ItemTable, any_image, modalities_of, subset
from mmeb.tasks import get_task


def fields(item):
    return (item.raw, item.text, item.instruction, item.image_path, item.origin, item.modality)


def mixed_task(tmp_path, rows=30):
    """Repeated queries and candidates across the whole file, images with two spellings."""
    rng = random.Random(1)
    task = get_task("WebQA")
    for colour in ("red", "blue", "green"):
        write_image(tmp_path, f"WebQA/{colour}.jpg", colour)
    prefix = f"{task.target_instruction} " if task.target_instruction else ""
    pool = [(f"{prefix}{t}", p) for t in ("a", "b", "c")
            for p in ("", "WebQA/red.jpg", "WebQA/./blue.jpg", "WebQA/blue.jpg")]
    records = []
    for _ in range(rows):
        cands = [rng.choice(pool) for _ in range(rng.randint(1, 9))]
        records.append({"qry_text": rng.choice(["q1", "q2", "q3", "q4"]),
                        "qry_img_path": rng.choice(["", "WebQA/green.jpg", "WebQA//green.jpg"]),
                        "tgt_text": [t for t, _ in cands], "tgt_img_path": [p for _, p in cands]})
    write_rows(tmp_path, task.name, records)
    return task, records


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_reading_in_batches_gives_what_one_batch_gives(tmp_path, monkeypatch, batch):
    task, _ = mixed_task(tmp_path)
    whole, _ = load_task_inputs(task, data_dir=tmp_path, limit=26)
    monkeypatch.setattr(data, "ROW_BATCH", batch)
    batched, _ = load_task_inputs(task, data_dir=tmp_path, limit=26)
    for side in ("queries", "targets"):
        assert [fields(i) for i in getattr(batched, side)] == \
            [fields(i) for i in getattr(whole, side)]
    np.testing.assert_array_equal(batched.query_index, whole.query_index)
    np.testing.assert_array_equal(batched.candidates, whole.candidates)
    assert batched.stats == whole.stats
    assert batched.stats["duplicate_candidates_dropped"] > 0
    assert (batched.num_rows, batched.num_rows_total) == (26, 30)


def test_origins_name_the_first_row_and_position_of_each_input(tmp_path, monkeypatch):
    task, records = mixed_task(tmp_path)
    monkeypatch.setattr(data, "ROW_BATCH", 4)
    inputs, _ = load_task_inputs(task, data_dir=tmp_path)
    first = {}  # (raw, path) -> where it first appears in the file (before any dedup)
    for r, record in enumerate(records):
        pairs = zip(record["tgt_text"], record["tgt_img_path"], strict=True)
        for c, (raw, path) in enumerate(pairs):
            first.setdefault((raw, os.path.normpath(path) if path else ""), (r, c))
    root = str((tmp_path / "eval_images").resolve())
    for item in inputs.targets:
        rel = item.image_path[len(root) + 1:] if item.image_path else ""
        assert item.origin == "WebQA row {} candidate {}".format(*first[(item.raw, rel)])
    for k, item in enumerate(inputs.queries):
        assert item.origin == f"WebQA row {np.flatnonzero(inputs.query_index == k)[0]} query"


def test_a_bad_row_in_a_later_batch_is_named_by_its_row_in_the_data(tmp_path, monkeypatch):
    task = get_task("ImageNet-1K")
    write_image(tmp_path, "ImageNet-1K/a.jpg", "red")
    rows = [class_row() for _ in range(5)] + [class_row(qry_img_path="ImageNet-1K/gone.jpg")]
    write_rows(tmp_path, task.name, [*rows, class_row(tgt_img_path=[""])])
    monkeypatch.setattr(data, "ROW_BATCH", 2)
    with pytest.raises(DataError, match=r"row 6: tgt_text has 2 entries"):
        load_task_inputs(task, data_dir=tmp_path)
    with pytest.raises(DataError, match=r"row 5 query: image not found"):
        load_task_inputs(task, data_dir=tmp_path, limit=6)


def test_table_views_agree_with_the_items_they_hold(tmp_path):
    task, _ = mixed_task(tmp_path)
    inputs, _ = load_task_inputs(task, data_dir=tmp_path)
    table = inputs.targets
    assert isinstance(table, ItemTable)
    items = list(table)
    assert len(items) == len(table) > 5
    assert [fields(i) for i in table[1:5]] == [fields(i) for i in items[1:5]]
    assert [fields(i) for i in table[::3]] == [fields(i) for i in items[::3]]
    assert fields(table[-1]) == fields(items[-1])
    assert fields(table[np.int64(2)]) == fields(items[2])
    with pytest.raises(IndexError):
        table[len(table)]
    picks = np.array([4, 0, 3])
    assert [fields(i) for i in subset(table, picks)] == [fields(items[i]) for i in picks]
    assert [fields(i) for i in subset(items, picks)] == [fields(items[i]) for i in picks]
    assert modalities_of(table) == {i.modality for i in items} == {"text", "image+text"}
    assert modalities_of(subset(table, np.array([k for k, i in enumerate(items)
                                                  if not i.has_image]))) == {"text"}
    assert any_image(table)
    assert any_image(items)
    # One spelling per image: "./" and "//" variants are the same input.
    assert len({i.key for i in items}) == len(items)
    assert sum(i.image_path is not None and i.image_path.endswith("blue.jpg")
               for i in items) == 3


POOL_CHILD = """
import sys
import pyarrow as pa
from mmeb.data import load_task_inputs
from mmeb.tasks import get_task
load_task_inputs(get_task("WebQA"), data_dir=sys.argv[1])
print(pa.default_memory_pool().backend_name)
"""


@pytest.mark.parametrize(("setting", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_rows_are_read_with_the_system_allocator_unless_arrow_is_told_otherwise(
    tmp_path, setting, expected
):
    import subprocess
    import sys

    mixed_task(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if setting:
        env["ARROW_DEFAULT_MEMORY_POOL"] = setting
    done = subprocess.run([sys.executable, "-c", POOL_CHILD, str(tmp_path)], env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == expected
