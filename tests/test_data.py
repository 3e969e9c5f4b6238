"""Loading MMEB-eval rows: schema, items, and one clear error per kind of bad input."""

from __future__ import annotations

import pyarrow as pa
import pytest
from mmeb_fixtures import class_row, colour_classification, colour_t2i, write_image, write_rows

from mmeb.data import load_task_inputs
from mmeb.engine import evaluate_task
from mmeb.errors import DataError
from mmeb.random_encoder import RandomEncoder
from mmeb.tasks import get_task


def test_items_keep_raw_string_and_parsed_parts(tmp_path):
    task = colour_t2i(tmp_path)
    inputs, source = load_task_inputs(task, data_dir=tmp_path)
    query = inputs.queries[0]
    assert query.raw == ("Find me an everyday image that matches the given caption: "
                         "a plain red square\n")
    assert query.instruction == task.query_instruction
    assert query.text == "a plain red square"
    assert query.image_path is None
    assert query.image is None
    target = inputs.targets[0]
    assert target.raw == "<|image_1|>\nRepresent the given image.\n"
    assert target.instruction == "Represent the given image."
    assert target.text == ""
    assert target.image_path.endswith("MSCOCO_t2i/red.jpg")
    assert target.image.size == (16, 16)
    assert target.image.mode == "RGB"
    assert target.modality == "image"
    assert query.modality == "text"
    assert source.kind == "local"
    assert len(source.describe()["sha256"]) == 64
    # gold stays at column 0
    assert inputs.targets[inputs.candidates[0, 0]].image_path.endswith("red.jpg")


def test_shorter_candidate_lists_are_recorded_not_refused(tmp_path):
    task = colour_classification(tmp_path, get_task("A-OKVQA"), rows=3)
    result = evaluate_task(RandomEncoder(), task, data_dir=str(tmp_path), progress=False)
    assert result.counts["candidates_per_query"]["max"] == 8
    assert any("reference lists 1000" in n for n in result.notes)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (class_row(tgt_img_path=[""]),
         r"ImageNet-1K row 0: tgt_text has 2 entries but tgt_img_path"),
        (class_row(tgt_text=[], tgt_img_path=[]), "row 0: empty candidate list"),
        (class_row(qry_img_path="ImageNet-1K/missing.jpg"),
         r"row 0 query: image not found: .*missing"),
        (class_row(qry_img_path="../../etc/passwd"), "points outside the image root"),
    ],
)
def test_bad_rows_name_task_row_and_fix(tmp_path, row, message):
    task = get_task("ImageNet-1K")
    write_image(tmp_path, "ImageNet-1K/a.jpg", "red")
    write_rows(tmp_path, task.name, [row])
    with pytest.raises(DataError, match=message):
        load_task_inputs(task, data_dir=tmp_path)


def test_corrupt_image_names_task_row_and_path(tmp_path):
    task = get_task("ImageNet-1K")
    (tmp_path / "eval_images" / "ImageNet-1K").mkdir(parents=True)
    (tmp_path / "eval_images" / "ImageNet-1K" / "a.jpg").write_bytes(b"not a jpeg")
    write_rows(tmp_path, task.name, [class_row()])

    class ReadsImages(RandomEncoder):
        def encode(self, items, *, side, task):
            [item.image for item in items]
            return super().encode(items, side=side, task=task)

    with pytest.raises(DataError, match=r"ImageNet-1K row 0 query: cannot read image .*a\.jpg"):
        evaluate_task(ReadsImages(), task, data_dir=str(tmp_path), progress=False)


def test_wrong_schema_names_the_column(tmp_path):
    task = get_task("ImageNet-1K")
    strings = pa.list_(pa.string())
    schema = pa.schema([("query", pa.string()), ("qry_img_path", pa.string()),
                        ("tgt_text", strings), ("tgt_img_path", strings)])
    write_rows(tmp_path, task.name, [{"query": "x", "qry_img_path": "", "tgt_text": ["a"],
                                     "tgt_img_path": [""]}], schema=schema)
    with pytest.raises(DataError, match="lacks column 'qry_text'"):
        load_task_inputs(task, data_dir=tmp_path)


def test_wrong_column_type_is_reported(tmp_path):
    task = get_task("ImageNet-1K")
    schema = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                        ("tgt_text", pa.string()), ("tgt_img_path", pa.list_(pa.string()))])
    write_rows(tmp_path, task.name, [{"qry_text": "x", "qry_img_path": "", "tgt_text": "a",
                                     "tgt_img_path": [""]}], schema=schema)
    with pytest.raises(DataError, match="column 'tgt_text' is string, expected list<string>"):
        load_task_inputs(task, data_dir=tmp_path)


def test_empty_data_dir_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=r"no folder .*ImageNet-1K; expected .*test-\*\.parquet"):
        load_task_inputs(get_task("ImageNet-1K"), data_dir=tmp_path)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_task_inputs(get_task("ImageNet-1K"), data_dir=tmp_path / "nope")


def test_no_local_data_and_no_network_says_how_to_get_it():
    with pytest.raises(DataError, match=r"mmeb download.*--data-dir"):
        load_task_inputs(get_task("CIRR"))


def test_columnar_dedup_equals_a_naive_loop(tmp_path):
    """Unique items and per-row candidate lists match a plain first-seen dedup, row by row."""
    import random

    rng = random.Random(0)
    task = get_task("WebQA")
    for colour in ("red", "blue", "green"):
        write_image(tmp_path, f"WebQA/{colour}.jpg", colour)
    pool = [(t, p) for t in ("a", "b", "c", "") for p in ("", "WebQA/red.jpg", "WebQA/blue.jpg")]
    rows = []
    for _ in range(40):
        cands = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        cands = [c for c in cands if c != ("", "")] or [("a", "")]
        rows.append({"qry_text": rng.choice(["q1", "q2", "q3"]),
                     "qry_img_path": rng.choice(["", "WebQA/green.jpg"]),
                     "tgt_text": [t for t, _ in cands], "tgt_img_path": [p for _, p in cands]})
    write_rows(tmp_path, task.name, rows)
    inputs, _ = load_task_inputs(task, data_dir=tmp_path, limit=35)

    root = str((tmp_path / "eval_images").resolve())

    def key(item):
        path = item.image_path[len(root) + 1:] if item.image_path else ""
        return (item.raw, path)

    expected_queries = list(dict.fromkeys((r["qry_text"], r["qry_img_path"]) for r in rows[:35]))
    assert [key(q) for q in inputs.queries] == expected_queries
    expected_targets = list(dict.fromkeys(
        pair for r in rows[:35] for pair in zip(r["tgt_text"], r["tgt_img_path"], strict=True)))
    assert [key(t) for t in inputs.targets] == expected_targets
    dropped = 0
    for i, r in enumerate(rows[:35]):
        assert key(inputs.queries[inputs.query_index[i]]) == (r["qry_text"], r["qry_img_path"])
        pairs = list(zip(r["tgt_text"], r["tgt_img_path"], strict=True))
        unique = list(dict.fromkeys(pairs))
        dropped += len(pairs) - len(unique)
        got = [key(inputs.targets[c]) for c in inputs.candidates[i] if c >= 0]
        assert got == unique
    assert inputs.stats["duplicate_candidates_dropped"] == dropped
    assert inputs.num_rows == 35
    assert inputs.num_rows_total == 40


def test_corrupt_parquet_names_the_file(tmp_path):
    folder = tmp_path / "ImageNet-1K"
    folder.mkdir()
    (folder / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"ImageNet-1K: cannot read .*test-00000-of-00001\.parquet"):
        load_task_inputs(get_task("ImageNet-1K"), data_dir=tmp_path)


def test_recorded_hash_is_that_of_the_parquet_bytes(tmp_path):
    import hashlib

    task = colour_t2i(tmp_path)
    _, source = load_task_inputs(task, data_dir=tmp_path)
    file = tmp_path / task.name / "test-00000-of-00001.parquet"
    assert source.describe()["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()


def test_a_task_stored_as_several_parquet_files_reads_them_in_order(tmp_path):
    import hashlib

    import pyarrow.parquet as pq

    single, split = tmp_path / "single", tmp_path / "split"
    task = colour_t2i(single)
    colour_t2i(split)
    whole = single / task.name / "test-00000-of-00001.parquet"
    table = pq.read_table(whole)
    (split / task.name / "test-00000-of-00001.parquet").unlink()
    parts = [split / task.name / f"test-0000{i}-of-00002.parquet" for i in range(2)]
    pq.write_table(table.slice(0, 3), parts[0])
    pq.write_table(table.slice(3), parts[1])

    one, _ = load_task_inputs(task, data_dir=single)
    two, source = load_task_inputs(task, data_dir=split)
    assert source.parquet_files == parts
    assert two.num_rows == one.num_rows == table.num_rows
    assert [q.raw for q in two.queries] == [q.raw for q in one.queries]
    assert [(t.raw, t.image_path and t.image_path.replace(str(split), "")) for t in two.targets] \
        == [(t.raw, t.image_path and t.image_path.replace(str(single), "")) for t in one.targets]
    assert (two.candidates == one.candidates).all()
    digest = hashlib.sha256(parts[0].read_bytes() + parts[1].read_bytes()).hexdigest()
    assert source.sha256 == digest
    scores = [evaluate_task(RandomEncoder(), task, data_dir=d, progress=False).metrics
              for d in (single, split)]
    assert scores[0] == scores[1]


def test_a_registered_source_kind_serves_its_tasks(tmp_path, monkeypatch):
    import dataclasses

    import mmeb.sources as sources

    colour_t2i(tmp_path)
    task = dataclasses.replace(get_task("MSCOCO_t2i"), source="my-lab")
    seen = []

    def my_lab(spec, image_dir):
        seen.append(spec.name)
        return sources.local_source(spec, tmp_path, image_dir, kind="my-lab")

    monkeypatch.setitem(sources.SOURCE_KINDS, "my-lab", "test_data_sources:my_lab")
    module = type(sources)("test_data_sources")
    module.my_lab = my_lab  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "test_data_sources", module)
    inputs, source = load_task_inputs(task)
    assert seen == ["MSCOCO_t2i"]
    assert source.kind == "my-lab"
    assert inputs.num_rows == 8

    with pytest.raises(DataError, match=r"unknown source kind 'nowhere'.*register_source"):
        load_task_inputs(dataclasses.replace(task, source="nowhere"))
