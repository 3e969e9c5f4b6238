"""MMEB-train pairs: local folder, sample suite, Hub path, caps, bad rows, the pair order."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from vlm2vec_fixtures import TRAIN_PAIRS, small_suite

from mmeb.errors import DataError
from vlm2vec import data as data_mod
from vlm2vec.data import PairStream, batch_pairs, load_train_data, stream_for

SUBSET = "Sample-Shapes"


def load(folder: str, **kw: Any) -> data_mod.TrainData:
    args: dict[str, Any] = {"data": folder, "subsets": [], "split": "original",
                            "image_dir": None, "max_per_subset": 0, "subset_sampling": "first",
                            "seed": 0, "hard_negatives": False, "check_images": "header",
                            "skip_bad_rows": False}
    args.update(kw)
    return load_train_data(**args)


@pytest.fixture
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_suite(tmp_path_factory) / "train"


def test_local_folder_reads_every_subset_with_resolved_images(train_dir: Path) -> None:
    d = load(str(train_dir))
    assert len(d.subsets) == 12
    assert d.sizes == [TRAIN_PAIRS] * 12
    rows = pq.read_table(train_dir / SUBSET / "original-00000-of-00001.parquet").to_pylist()
    shapes = d.subsets[[s.name for s in d.subsets].index(SUBSET)]
    pair = shapes.pair(3, hard_negatives=True)
    assert pair.query.text == rows[3]["qry"]
    assert pair.target.text == rows[3]["pos_text"]
    assert pair.query.image == str(train_dir / rows[3]["qry_image_path"])
    assert Path(pair.query.image).is_file()
    assert pair.target.image is None
    assert pair.negative is not None
    assert pair.negative.text == rows[3]["neg_text"]
    assert shapes.pair(3, hard_negatives=False).negative is None
    assert pair.query.origin == f"{SUBSET} row 3 query"


def test_sample_source_is_the_sample_suites_train_split(
    train_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmeb.sample

    monkeypatch.setattr(mmeb.sample, "ensure_sample", lambda: train_dir.parent)
    d = load("sample", subsets=[SUBSET, "Sample-Edit"])
    assert [s.name for s in d.subsets] == [SUBSET, "Sample-Edit"]
    assert d.source["kind"] == "sample"


def test_cap_first_rows_or_a_seeded_sample(train_dir: Path) -> None:
    first = load(str(train_dir), subsets=[SUBSET], max_per_subset=10).subsets[0]
    assert first.rows == list(range(10))
    a = load(str(train_dir), subsets=[SUBSET], max_per_subset=10, subset_sampling="random",
             seed=1).subsets[0]
    b = load(str(train_dir), subsets=[SUBSET], max_per_subset=10, subset_sampling="random",
             seed=1).subsets[0]
    c = load(str(train_dir), subsets=[SUBSET], max_per_subset=10, subset_sampling="random",
             seed=2).subsets[0]
    assert a.rows == b.rows != c.rows
    assert len(set(a.rows)) == 10
    assert a.rows != first.rows


def broken_copy(train_dir: Path, tmp_path: Path) -> Path:
    """SUBSET with a missing image (row 2), an unreadable one (row 5), an empty text (row 7)."""
    import pyarrow as pa

    root = tmp_path / "train"
    shutil.copytree(train_dir / SUBSET, root / SUBSET)
    shutil.copytree(train_dir / "images" / SUBSET, root / "images" / SUBSET)
    file = root / SUBSET / "original-00000-of-00001.parquet"
    rows = pq.read_table(file).to_pylist()
    rows[2]["qry_image_path"] = "images/gone.jpg"
    (root / rows[5]["qry_image_path"]).write_bytes(b"not a jpeg")
    rows[7]["pos_text"] = "  "
    pq.write_table(pa.Table.from_pylist(rows), file)
    return root


def test_bad_rows_stop_the_run_up_front_in_one_line(train_dir: Path, tmp_path: Path) -> None:
    root = broken_copy(train_dir, tmp_path)
    listing = tmp_path / "out" / "bad_rows.jsonl"
    with pytest.raises(DataError) as info:
        load(str(root), bad_rows_file=listing)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"3 bad training rows ({SUBSET} 3)")
    assert f"{SUBSET} row 2: query image not found" in message
    assert "--skip_bad_rows true" in message
    assert str(listing) in message
    assert len(listing.read_text().splitlines()) == 3


def test_bad_rows_are_counted_named_and_skipped_when_asked(
    train_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = broken_copy(train_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="vlm2vec"):
        d = load(str(root), skip_bad_rows=True)
    assert [(b["row"], b["reasons"][0].split(":")[0]) for b in d.bad_rows] == [
        (2, "query image not found"), (5, "query unreadable image (UnidentifiedImageError)"),
        (7, "empty target text")]
    assert d.sizes == [TRAIN_PAIRS - 3]
    assert not {2, 5, 7} & set(d.subsets[0].rows)
    assert f"bad row: {SUBSET} row 5" in caplog.text
    assert "skipped 3 bad rows" in caplog.text
    # Only a full decode sees a truncated file; "exists" checks presence only.
    assert len(load(str(root), skip_bad_rows=True, check_images="exists").bad_rows) == 2


def test_hub_source_through_a_patched_datasets_loader(train_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[str, str, str, str | None]] = []

    def fake_load_dataset(path: str, name: str, *, split: str, revision: str | None) -> Any:
        calls.append((path, name, split, revision))  # a local copy stands in for the Hub's
        return datasets.Dataset.from_parquet(
            str(train_dir / name / "original-00000-of-00001.parquet"),
            cache_dir=str(tmp_path / "hf"))

    def fake_zip(subset: str, revision: str | None) -> Path:
        # the archive holds Train/<file> (the images/<S>/ prefix of the rows dropped)
        archive = tmp_path / f"{subset}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for f in (train_dir / "images" / subset / "Train").iterdir():
                zf.write(f, f"Train/{f.name}")
        return archive

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(data_mod, "_hub_zip", fake_zip)
    d = load("hub", subsets=[SUBSET], split="diverse_instruction", hub_revision="abc")
    assert calls == [("TIGER-Lab/MMEB-train", SUBSET, "diverse_instruction", "abc")]
    assert d.sizes == [TRAIN_PAIRS]
    image = d.subsets[0].pair(0, False).query.image
    assert image is not None
    assert Path(image).is_file()
    assert "mmeb-train-images" in image
    assert d.source["kind"] == "hub"
    assert not d.bad_rows


def test_hub_source_offline_is_a_one_line_error() -> None:
    pytest.importorskip("datasets")
    with pytest.raises(DataError, match=r"TIGER-Lab/MMEB-train CIRR split original: cannot "):
        data_mod._hub_table("CIRR", "original", None)


def test_the_paper_subsets_are_the_twenty() -> None:
    assert len(data_mod.PAPER_SUBSETS) == 20
    assert "ImageNet_1K" in data_mod.PAPER_SUBSETS


def test_shuffled_stream_visits_each_pair_once_per_epoch_and_resumes_anywhere() -> None:
    s = PairStream([5, 3, 4], seed=0)
    epoch = s.at(0, 12)
    assert sorted(epoch) == sorted((i, j) for i, n in enumerate([5, 3, 4]) for j in range(n))
    assert s.at(0, 24)[12:] != epoch  # a new shuffle next epoch
    fresh = PairStream([5, 3, 4], seed=0)
    assert fresh.at(17, 9) == s.at(0, 26)[17:]
    assert PairStream([5, 3, 4], seed=1).at(0, 12) != epoch


def test_weighted_stream_draws_subsets_by_weight_and_resumes() -> None:
    s = PairStream([100, 100, 10], seed=0, weights=[3, 1, 0])
    picks = s.at(0, 8000)
    counts = [sum(1 for p in picks if p[0] == i) for i in range(3)]
    assert counts[2] == 0
    assert 0.72 < counts[0] / 8000 < 0.78
    assert PairStream([100, 100, 10], seed=0, weights=[3, 1, 0]).at(5000, 200) == picks[5000:5200]
    first = [p for p in picks if p[0] == 1][:100]
    assert sorted(j for _, j in first) == list(range(100))  # each subset shuffles per epoch


def test_subset_weights_must_name_every_subset(train_dir: Path) -> None:
    d = load(str(train_dir), subsets=[SUBSET, "Sample-Edit"])
    with pytest.raises(DataError, match="no weight for Sample-Edit"):
        stream_for(d, 0, {SUBSET: 1.0})
    with pytest.raises(DataError, match="unknown subset"):
        stream_for(d, 0, {SUBSET: 1.0, "Sample-Edit": 1.0, "CIRR": 2.0})


def test_processes_share_out_the_same_global_batch(train_dir: Path) -> None:
    d = load(str(train_dir))
    s = stream_for(d, 0, {})
    whole = batch_pairs(d, s, 3, 8, 0, 1)
    halves = batch_pairs(d, s, 3, 8, 0, 2) + batch_pairs(d, s, 3, 8, 1, 2)
    assert whole == halves
    assert len(set(map(str, whole))) == 8


def test_subset_batches_hold_one_subset_each_and_cover_it_once_per_epoch() -> None:
    from vlm2vec.data import SubsetBatchStream

    sizes = [40, 24, 16]
    s = SubsetBatchStream(sizes, seed=0, batch=8)
    batches = [s.at(8 * b, 8) for b in range(60)]
    assert all(len({i for i, _ in batch}) == 1 for batch in batches)
    drawn = [batch[0][0] for batch in batches]
    assert set(drawn) == {0, 1, 2}
    assert drawn.count(0) > drawn.count(2)  # in proportion to the sizes
    rows_of_1 = [j for batch in batches if batch[0][0] == 1 for _, j in batch]
    assert sorted(rows_of_1[:24]) == list(range(24))  # a shuffle of the subset per epoch
    # A pure function of the position: a fresh stream (a resumed run, another rank) agrees.
    assert SubsetBatchStream(sizes, seed=0, batch=8).at(8 * 37 + 4, 4) == batches[37][4:]
    assert SubsetBatchStream(sizes, seed=1, batch=8).at(0, 64) != s.at(0, 64)
