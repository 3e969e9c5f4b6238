"""Prefetching and the embedding cache change where work happens, never the numbers."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mmeb_fixtures import colour_classification, colour_t2i, write_image

from mmeb.cli import main
from mmeb.embcache import EmbeddingCache, list_models
from mmeb.encoding import open_cache
from mmeb.engine import evaluate_task
from mmeb.errors import DataError
from mmeb.items import Item, Side
from mmeb.prefetch import iter_batches
from mmeb.random_encoder import hashed_vector
from mmeb.runner import RunConfig


class PixelEncoder:
    """Vectors from the pixels and the text: any change of image content changes them.

    Counts every item it encodes and whether its image had been decoded ahead."""

    name = "pixels"

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        self.config = {"dim": dim, "seed": seed}
        self.calls: Counter = Counter()
        self.predecoded = 0

    def encode(self, items, *, side, task):
        out = []
        for item in items:
            self.calls[side] += 1
            self.predecoded += item.decoded is not None
            image = item.image
            pixels = np.asarray(image, dtype=np.float64).mean(axis=(0, 1)) if image else 0
            vec = hashed_vector(f"{self.config['seed']}\0{item.raw}", self.config["dim"])
            out.append(vec + np.resize(pixels, self.config["dim"]) / 50.0)
        return np.array(out)


def _tasks(data_dir: Path):
    return [colour_classification(data_dir), colour_t2i(data_dir)]


def _scores(encoder, tasks, data_dir, **options):
    return [evaluate_task(encoder, t, data_dir=str(data_dir), batch_size=3, progress=False,
                          **options).metrics for t in tasks]


def _cache(root: Path, encoder, **identity) -> EmbeddingCache:
    settings = {"model": "pixels", "checkpoint": None, "model_args": {}, "dtype": None}
    return open_cache(root, encoder, **{**settings, **identity})


def test_prefetched_batches_are_the_plain_batches_with_their_images_decoded(tmp_path):
    colour_t2i(tmp_path)
    paths = sorted((tmp_path / "eval_images" / "MSCOCO_t2i").glob("*.jpg"))
    items = [Item(raw=f"r{i}", text="", image_path=str(p)) for i, p in enumerate(paths)]
    items.insert(2, Item(raw="text only", text="text only"))
    plain = list(iter_batches(items, 3))
    ahead = list(iter_batches(items, 3, workers=2))
    assert [[i.raw for i in b] for b in ahead] == [[i.raw for i in b] for b in plain]
    for batch in ahead:
        for item in batch:
            if item.image_path:
                assert item.decoded is not None
                assert item.image.tobytes() == Item(raw="", text="",
                            image_path=item.image_path).image.tobytes()
            else:
                assert item.image is None


def test_an_unreadable_image_fails_the_same_way_with_prefetch(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    items = [Item(raw="x", text="", image_path=str(bad), origin="T row 0 query")]
    with pytest.raises(DataError, match="T row 0 query: cannot read image"):
        list(iter_batches(items, 4, workers=2))


def test_scores_are_identical_with_and_without_prefetch(tmp_path):
    tasks = _tasks(tmp_path)
    off, on = PixelEncoder(), PixelEncoder()
    assert _scores(off, tasks, tmp_path, prefetch=0) == _scores(on, tasks, tmp_path, prefetch=2)
    assert off.predecoded == 0
    assert on.predecoded == 12 + 8  # every image item arrived decoded (queries, candidates)


def test_a_second_run_with_the_cache_encodes_nothing_and_scores_the_same(tmp_path):
    tasks = _tasks(tmp_path)
    baseline = _scores(PixelEncoder(), tasks, tmp_path)
    first, second = PixelEncoder(), PixelEncoder()
    assert _scores(first, tasks, tmp_path, cache=_cache(tmp_path / "c", first)) == baseline
    assert sum(first.calls.values()) == 12 + 8 + 8 + 8  # unique inputs, exactly
    cache = _cache(tmp_path / "c", second)
    assert _scores(second, tasks, tmp_path, cache=cache) == baseline
    assert sum(second.calls.values()) == 0
    assert cache.hits == 36
    assert cache.misses == 0


def test_the_cache_is_never_reused_across_a_changed_setting(tmp_path):
    task = colour_t2i(tmp_path)
    root = tmp_path / "c"
    enc = PixelEncoder()
    _scores(enc, [task], tmp_path, cache=_cache(root, enc))

    def calls_after(encoder, task_=task, **identity) -> Counter:
        _scores(encoder, [task_], tmp_path, cache=_cache(root, encoder, **identity))
        return encoder.calls

    assert sum(calls_after(PixelEncoder()).values()) == 0  # same settings: all reused
    assert calls_after(PixelEncoder(seed=1)) == {Side.QUERY: 8, Side.TARGET: 8}  # config
    assert calls_after(PixelEncoder(), dtype="bfloat16") == {Side.QUERY: 8, Side.TARGET: 8}
    assert calls_after(PixelEncoder(), model_args={"fusion": "sum"}) == {
        Side.QUERY: 8, Side.TARGET: 8}
    changed = dataclasses.replace(task, target_instruction="Find me a picture.")
    assert calls_after(PixelEncoder(), task_=changed) == {Side.TARGET: 8}  # instruction
    # Same path, new bytes: only the rewritten image's candidate is recomputed.
    write_image(tmp_path, "MSCOCO_t2i/red.jpg", "blue")
    assert calls_after(PixelEncoder()) == {Side.TARGET: 1}


def test_preprocessing_workers_reuse_the_cache_and_the_results(tmp_path):
    # Workers change where batches are prepared, never the vectors: adding them to a finished
    # run must neither recompute cached vectors nor refuse the stored results.
    task = colour_t2i(tmp_path)
    root = tmp_path / "c"
    enc = PixelEncoder()
    _scores(enc, [task], tmp_path, cache=_cache(root, enc, model_args={"seed": 0}))
    again = PixelEncoder()
    _scores(again, [task], tmp_path,
            cache=_cache(root, again, model_args={"seed": 0, "workers": 2}))
    assert sum(again.calls.values()) == 0
    plain = RunConfig(model="pixels", model_args={"seed": 0})
    assert RunConfig(model="pixels", model_args={"workers": 3, "seed": 0}).fingerprint() == \
        plain.fingerprint()
    assert RunConfig(model="pixels", model_args={"seed": 1}).fingerprint() != plain.fingerprint()


def test_a_new_revision_of_a_local_checkpoint_is_a_new_model(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights v1")
    enc = PixelEncoder()
    before = _cache(tmp_path / "c", enc, checkpoint=str(ckpt)).folder
    assert _cache(tmp_path / "c", enc, checkpoint=str(ckpt)).folder == before
    (ckpt / "model.safetensors").write_bytes(b"weights v2, retrained")
    assert _cache(tmp_path / "c", enc, checkpoint=str(ckpt)).folder != before


def test_the_same_input_on_the_other_side_is_not_reused(tmp_path):
    cache = _cache(tmp_path / "c", PixelEncoder())
    items = [Item(raw="a cat", text="a cat")]
    cache.put(cache.keys(items, side=Side.QUERY, side_instruction=None), np.ones((1, 4)),
              label="t query")
    hit, _ = cache.get(cache.keys(items, side=Side.TARGET, side_instruction=None))
    assert not hit.any()
    hit, vectors = cache.get(cache.keys(items, side=Side.QUERY, side_instruction=None))
    assert hit.all()
    assert vectors is not None
    assert (vectors == 1).all()


def test_a_corrupted_cache_entry_is_detected_and_recomputed(tmp_path, caplog):
    task = colour_t2i(tmp_path)
    root = tmp_path / "c"
    baseline = _scores(PixelEncoder(), [task], tmp_path, cache=_cache(root, PixelEncoder()))
    (segment,) = [p for p in root.glob("*/*.npy")
                  if "target" in json.loads(p.with_suffix(".json").read_text())["label"]]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte inside a vector
    segment.write_bytes(bytes(data))
    again = PixelEncoder()
    with caplog.at_level(logging.WARNING, logger="mmeb"):
        assert _scores(again, [task], tmp_path, cache=_cache(root, again)) == baseline
    assert again.calls == {Side.TARGET: 8}
    assert "corrupt" in caplog.text
    third = PixelEncoder()
    _scores(third, [task], tmp_path, cache=_cache(root, third))
    assert sum(third.calls.values()) == 0  # the recomputed vectors were stored again


def test_cache_ls_and_rm(tmp_path):
    data = tmp_path / "data"
    colour_t2i(data)
    cache_dir = tmp_path / "c"
    runner = CliRunner()
    for seed in (0, 1):
        result = runner.invoke(main, [
            "run", "--model", "random", "--model-arg", f"seed={seed}", "--tasks", "MSCOCO_t2i",
            "--data-dir", str(data), "--output-dir", str(tmp_path / f"out{seed}"),
            "--cache-dir", str(cache_dir), "--no-progress"])
        assert result.exit_code == 0, result.output
    listed = runner.invoke(main, ["cache", "ls", "--cache-dir", str(cache_dir)])
    assert listed.exit_code == 0
    models = list_models(cache_dir)
    assert len(models) == 2
    assert all(m.vectors == 16 for m in models)
    assert all(m.digest[:12] in listed.output for m in models)
    gone = runner.invoke(main, ["cache", "rm", models[0].digest[:8], "--cache-dir",
                                str(cache_dir)])
    assert gone.exit_code == 0
    assert "removed" in gone.output
    assert [m.digest for m in list_models(cache_dir)] == [models[1].digest]
    nothing = runner.invoke(main, ["cache", "rm", "nope", "--cache-dir", str(cache_dir)])
    assert nothing.exit_code == 1
    assert nothing.output.startswith("error: ")
    runner.invoke(main, ["cache", "rm", "--all", "--cache-dir", str(cache_dir)])
    assert list_models(cache_dir) == []


def test_leftovers_of_a_dead_writer_are_removed_and_nothing_else(tmp_path):
    import os
    import subprocess
    import sys

    from mmeb.embcache import _writer_tag, remove_leftovers

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = _writer_tag().rsplit("-", 1)[0]
    cache = _cache(tmp_path / "c", PixelEncoder())
    cache.put(["k"], np.ones((1, 4)), label="t query")  # a complete segment of this process
    folder = cache.folder
    names = {
        f"{host}-{dead}-ab12.npy": False,  # vectors whose index a killed writer never wrote
        f".{host}-{dead}-ab12.json.{host}-{dead}-0f0f.tmp": False,  # its temporary index
        f".model.json.{host}-{dead}-0f0f.tmp": False,
        f"{host}-{os.getpid()}-cd34.npy": True,  # a live writer's, about to get its index
        f".x.npy.{host}-{os.getpid()}-cd34.tmp": True,
        f"otherhost-{dead}-ab12.npy": True,  # another host's: its writer cannot be checked
    }
    for name in names:
        (folder / name).write_bytes(b"x")
    complete = {p.name for p in folder.iterdir()} - set(names)
    removed = remove_leftovers(folder)
    assert {p.name for p in removed} == {n for n, kept in names.items() if not kept}
    assert {p.name for p in folder.iterdir()} == complete | {n for n, k in names.items() if k}
    hit, vectors = _cache(tmp_path / "c", PixelEncoder()).get(["k"])
    assert hit.all()
    assert vectors is not None
