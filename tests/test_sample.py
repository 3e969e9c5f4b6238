"""The sample suite: MMEB formats, well-posed tasks (oracle 1.0, random at chance), determinism."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmeb.instructions import IMAGE_PLACEHOLDER, compose, parse
from mmeb.items import Item, Side
from mmeb.random_encoder import RandomEncoder
from mmeb.sample import cache
from mmeb.sample.datasets import BUILDERS
from mmeb.sample.generate import content_digest, generate, read_manifest, verify
from mmeb.sample.oracle import OracleEncoder
from mmeb.sample.spec import FULL_KINDS, SAMPLE_KINDS, SAMPLE_TASKS, full_tasks
from mmeb.tasks import META_TASKS, MMEB_V1_TASKS, TaskSpec, get_collection

TRAIN_PAIRS = 40  # the default is 2000; eval files do not depend on it
EVAL_SCHEMA = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                         ("tgt_text", pa.list_(pa.string())),
                         ("tgt_img_path", pa.list_(pa.string()))])
TRAIN_SCHEMA = pa.schema([(c, pa.string()) for c in (
    "qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path")])
BY_NAME = {t.name: t for t in SAMPLE_TASKS}

#: content_digest of generate(tasks=GOLDEN_TASKS, train_pairs=20, seed=0). Pixels are drawn
#: with integer arithmetic and a built-in font; the JPEG bytes were checked identical under
#: Pillow 10.0, 11.0, 12.0 and 13.0 (libjpeg-turbo 2.1 to 3.2). Parquet files count by their
#: rows, since pyarrow writes its version into the file footer. If this fails after an
#: intended change of the generator, bump SAMPLE_VERSION and update the value.
GOLDEN_TASKS = ["Sample-Shapes", "Sample-Matching"]
GOLDEN_DIGEST = "2ee9acddaa2931e2fdd310b64a1a06f5e624c660469333d6609c6b6fc8e5a5bc"


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("sample"), train_pairs=TRAIN_PAIRS)


def eval_rows(root: Path, task: TaskSpec) -> list[dict]:
    return pq.read_table(root / "eval" / task.name / "test-00000-of-00001.parquet").to_pylist()


def latents(root: Path, task: TaskSpec) -> list[dict]:
    return pq.read_table(root / "eval" / task.name / "latents.parquet").to_pylist()


# -- the task records -----------------------------------------------------------------------


def test_sample_collection_is_the_sample_tasks() -> None:
    assert get_collection("sample") == SAMPLE_TASKS
    assert set(SAMPLE_KINDS) == set(BY_NAME)
    assert set(SAMPLE_KINDS.values()) <= set(BUILDERS)
    for task in SAMPLE_TASKS:
        assert task.name.startswith("Sample-")
        assert task.benchmark == "sample"
        assert task.role == "IND"
        assert task.hf_dataset is None
        assert task.hf_revision is None
        assert task.hf_config == task.name == task.train_config
        assert task.train_query_instruction
        assert task.query_instruction
        assert 100 <= task.num_queries <= 200
        assert 50 <= task.num_candidates <= 100


def test_sample_tasks_cover_meta_tasks_and_modality_pairs() -> None:
    for meta in META_TASKS:
        assert sum(t.meta_task == meta for t in SAMPLE_TASKS) >= 2, meta
    pairs = {(t.query_modality, t.target_modality) for t in SAMPLE_TASKS}
    mmeb_pairs = {(t.query_modality, t.target_modality) for t in MMEB_V1_TASKS}
    assert mmeb_pairs <= pairs


def test_full_twin_mirrors_every_mmeb_task() -> None:
    full = full_tasks()
    assert len(full) == len(MMEB_V1_TASKS) == len(FULL_KINDS)
    assert set(FULL_KINDS.values()) <= set(BUILDERS)
    for twin, task in zip(full, MMEB_V1_TASKS, strict=True):
        assert twin.name == f"Full-{task.name}" == twin.hf_config
        assert (twin.meta_task, twin.role, twin.query_modality, twin.target_modality) == (
            task.meta_task, task.role, task.query_modality, task.target_modality)
        assert (twin.num_queries, twin.num_candidates) == (task.num_queries, task.num_candidates)
        assert twin.query_instruction == task.query_instruction
        assert (twin.train_config is None) == (task.train_config is None)
    assert not {t.name for t in full} & {t.name for t in get_collection("sample")}


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, mmeb, mmeb.sample, mmeb.sample.spec, mmeb.tasks\n"
        "mmeb.tasks.collections(); mmeb.sample.spec.full_tasks()\n"
        "heavy = [m for m in ('PIL', 'pyarrow', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BY_NAME))
def test_eval_file_is_mmeb_eval_v1(suite: Path, name: str) -> None:
    task = BY_NAME[name]
    table = pq.read_table(suite / "eval" / name / "test-00000-of-00001.parquet")
    assert table.schema.remove_metadata() == EVAL_SCHEMA
    rows = table.to_pylist()
    assert len(rows) == task.num_queries
    images = suite / "eval" / "eval_images"
    query_has_image = "image" in task.query_modality
    target_has_image = "image" in task.target_modality
    for row, latent in zip(rows, latents(suite, task), strict=True):
        texts, paths = row["tgt_text"], row["tgt_img_path"]
        assert len(texts) == len(paths) == len(latent["tgt_keys"]) == task.num_candidates
        assert len(set(zip(texts, paths, strict=True))) == len(texts)  # no tie with the gold
        keys = latent["tgt_keys"]
        assert keys[0] == latent["qry_key"]
        assert keys.count(keys[0]) == 1
        assert len(set(keys)) == len(keys)
        assert (row["qry_img_path"] != "") == query_has_image
        assert row["qry_text"].startswith(IMAGE_PLACEHOLDER) == query_has_image
        assert parse(row["qry_text"], task.query_instruction).instruction == task.query_instruction
        assert row["qry_text"].endswith("\n")
        for text, path in zip(texts, paths, strict=True):
            assert (path != "") == target_has_image
            if target_has_image:
                parsed = parse(text, task.target_instruction)
                assert parsed.instruction == task.target_instruction
                assert text == compose(task.target_instruction, parsed.text, has_image=True)
            else:  # bare class names, answers, captions
                assert IMAGE_PLACEHOLDER not in text
                assert not text.endswith("\n")
        for path in [row["qry_img_path"], *paths]:
            if path:
                assert path.startswith(f"{name}/")
                assert (images / path).is_file()


@pytest.mark.parametrize("name", list(BY_NAME))
def test_train_file_is_mmeb_train(suite: Path, name: str) -> None:
    task = BY_NAME[name]
    table = pq.read_table(suite / "train" / name / "original-00000-of-00001.parquet")
    assert table.schema.remove_metadata() == TRAIN_SCHEMA
    rows = table.to_pylist()
    assert len(rows) == TRAIN_PAIRS
    for row in rows:
        parsed = parse(row["qry"], task.train_query_instruction)
        assert parsed.instruction == task.train_query_instruction
        assert (row["pos_text"], row["pos_image_path"]) != (row["neg_text"], row["neg_image_path"])
        for column in ("qry_image_path", "pos_image_path", "neg_image_path"):
            path = row[column]
            if path:
                assert path.startswith(f"images/{name}/Train/")
                assert path.endswith(".jpg")
                assert (suite / "train" / path).is_file()
        assert bool(row["qry_image_path"]) == ("image" in task.query_modality)
        assert bool(row["pos_image_path"]) == ("image" in task.target_modality)


def test_hard_negatives_differ_from_the_gold_in_one_attribute(suite: Path) -> None:
    def objects(key: str) -> list[tuple[str, ...]]:
        return [tuple(o.replace("@", " ").split()) for o in key.removeprefix("scene:").split(";")]

    def one_apart(a: str, b: str) -> bool:
        x, y = objects(a), objects(b)
        if len(x) != len(y):
            return False
        rest_x = [o for o in x if o not in y]
        rest_y = [o for o in y if o not in x]
        return len(rest_x) == len(rest_y) == 1 and sum(
            p != q for p, q in zip(rest_x[0], rest_y[0], strict=True)) == 1

    for name in ("Sample-Caption-t2i", "Sample-Caption-i2t", "Sample-NearDup"):
        for latent in latents(suite, BY_NAME[name]):
            gold, *others = latent["tgt_keys"]
            assert sum(one_apart(gold, o) for o in others) >= 2, name


def test_manifest_lists_every_file(suite: Path) -> None:
    manifest = read_manifest(suite)
    assert manifest["tasks"] == list(BY_NAME)
    assert manifest["train_pairs"] == TRAIN_PAIRS
    on_disk = {p.relative_to(suite).as_posix() for p in suite.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    assert verify(suite) == []


# -- the tasks are well posed ---------------------------------------------------------------


def _encode_all(
    encoder: Any, root: Path, task: TaskSpec, pairs: set[tuple[str, str]], side: Side
) -> dict[tuple[str, str], np.ndarray]:
    """Each distinct (raw, image path) of one side, encoded once and L2-normalised."""
    instruction = task.query_instruction if side is Side.QUERY else task.target_instruction
    images = root / "eval" / "eval_images"
    keys = sorted(pairs)
    items = [Item(raw=raw, text=parse(raw, instruction).text,
                  instruction=parse(raw, instruction).instruction,
                  image_path=str(images / path) if path else None) for raw, path in keys]
    vectors = np.asarray(encoder.encode(items, side=side, task=task), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return dict(zip(keys, vectors, strict=True))


def expected_hit1(encoder: Any, root: Path, task: TaskSpec) -> float:
    """Tie-safe hit@1 read straight from the files (independent of the evaluation engine)."""
    rows = eval_rows(root, task)
    queries = _encode_all(encoder, root, task,
                          {(r["qry_text"], r["qry_img_path"]) for r in rows}, Side.QUERY)
    targets = _encode_all(encoder, root, task, {
        pair for r in rows for pair in zip(r["tgt_text"], r["tgt_img_path"], strict=True)},
        Side.TARGET)
    total = 0.0
    for row in rows:
        q = queries[(row["qry_text"], row["qry_img_path"])]
        scores = np.array([targets[pair] @ q for pair in
                           zip(row["tgt_text"], row["tgt_img_path"], strict=True)])
        above = int((scores[1:] > scores[0] + 1e-9).sum())
        tied = int((np.abs(scores[1:] - scores[0]) <= 1e-9).sum())
        total += 0.0 if above else 1.0 / (tied + 1)
    return total / len(rows)


def _chance_band(chance: float, n: int) -> float:
    return chance + 4 * math.sqrt(chance * (1 - chance) / n) + 1e-9


@pytest.mark.parametrize("name", list(BY_NAME))
def test_oracle_is_perfect_and_random_is_at_chance(suite: Path, name: str) -> None:
    task = BY_NAME[name]
    assert expected_hit1(OracleEncoder(suite), suite, task) == 1.0
    chance = 1 / task.num_candidates
    assert expected_hit1(RandomEncoder(), suite, task) <= _chance_band(chance, task.num_queries)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_engine_oracle_and_random(suite: Path, name: str) -> None:
    from mmeb.engine import evaluate_task

    task = BY_NAME[name]
    data = str(suite / "eval")
    oracle = evaluate_task(OracleEncoder(suite), task, data_dir=data, batch_size=256,
                           progress=False)
    assert oracle.metrics["hit@1"] == 1.0
    assert oracle.counts["duplicate_candidates_dropped"] == 0
    assert oracle.counts["rows"] == task.num_queries
    rand = evaluate_task(RandomEncoder(), task, data_dir=data, batch_size=256, progress=False)
    assert rand.chance == pytest.approx(1 / task.num_candidates)
    assert rand.metrics["hit@1"] <= _chance_band(rand.chance, task.num_queries)


def test_oracle_refuses_inputs_it_does_not_know(suite: Path) -> None:
    from mmeb.errors import DataError

    task = BY_NAME["Sample-Shapes"]
    with pytest.raises(DataError, match="no latent"):
        OracleEncoder(suite).encode([Item(raw="not in the data", text="x")], side=Side.TARGET,
                                    task=task)


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_same_bytes_and_subsets_match_the_full_run(
    suite: Path, tmp_path: Path
) -> None:
    names = ["Sample-Cards-it2it", "Sample-WordVQA"]
    first = generate(tmp_path / "a", tasks=names, train_pairs=TRAIN_PAIRS, workers=1)
    second = generate(tmp_path / "b", tasks=names, train_pairs=TRAIN_PAIRS, workers=2)
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()
    assert verify(first) == []
    assert verify(second) == []
    files = read_manifest(first)["files"]
    everything = read_manifest(suite)["files"]
    assert all(everything[rel] == digest for rel, digest in files.items())
    other_seed = generate(tmp_path / "c", tasks=names[:1], seed=1, train_pairs=TRAIN_PAIRS)
    assert read_manifest(other_seed)["files"] != {
        k: v for k, v in files.items() if names[0] in k}


def test_rerun_into_the_same_folder_replaces_old_files(tmp_path: Path) -> None:
    root = generate(tmp_path, tasks=["Sample-Words"], train_pairs=5)
    generate(root, tasks=["Sample-Words"], train_pairs=3)
    assert len(list((root / "train" / "images" / "Sample-Words" / "Train").iterdir())) == 3
    assert verify(root) == []


def test_golden_content_digest(tmp_path: Path) -> None:
    root = generate(tmp_path, tasks=GOLDEN_TASKS, train_pairs=20, workers=1)
    assert content_digest(root) == GOLDEN_DIGEST


# -- the cached copy ------------------------------------------------------------------------


@pytest.fixture
def fake_generate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """Swap the generator for a fast stand-in that records where it wrote."""
    import mmeb.sample.generate as generate_module

    monkeypatch.setenv("MMEB_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []

    def fake(out: Path, *, seed: int = 0, scale: str = "small", **_: object) -> Path:
        calls.append(Path(out))
        (Path(out) / "eval").mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(generate_module, "generate", fake)
    return calls


def test_ensure_sample_generates_once(fake_generate: list[Path]) -> None:
    root = cache.ensure_sample()
    assert root == cache.sample_root("small")
    assert (root / "manifest.json").is_file()
    assert root.name.endswith("-seed0-small")
    assert root.parent.name == "sample"
    assert fake_generate[0] != root  # written elsewhere, then renamed into place
    assert cache.ensure_sample() == root
    assert len(fake_generate) == 1
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temporary left


def test_ensure_sample_never_trusts_a_folder_without_manifest(fake_generate: list[Path]) -> None:
    root = cache.sample_root("small")
    (root / "eval").mkdir(parents=True)
    (root / "eval" / "half-written").write_text("")
    assert cache.ensure_sample() == root
    assert len(fake_generate) == 1
    assert not (root / "eval" / "half-written").exists()


def test_ensure_sample_after_a_crash_leaves_nothing_that_looks_complete(
    fake_generate: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmeb.sample.generate as generate_module

    def crash(out: Path, **_: object) -> Path:
        (Path(out) / "eval").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "generate", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.ensure_sample()
    root = cache.sample_root("small")
    assert not root.exists()
    assert list(root.parent.iterdir()) == []


def test_ensure_sample_loses_a_race_gracefully(
    fake_generate: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmeb.sample.generate as generate_module

    root = cache.sample_root("small")

    def other_process_wins(out: Path, **_: object) -> Path:
        (root / "eval").mkdir(parents=True)
        (root / "manifest.json").write_text('{"winner": true}')
        (Path(out) / "eval").mkdir()
        (Path(out) / "manifest.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(generate_module, "generate", other_process_wins)
    assert cache.ensure_sample() == root
    assert json.loads((root / "manifest.json").read_text()) == {"winner": True}
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_ensure_sample_rejects_unknown_scale() -> None:
    from mmeb.errors import MMEBError

    with pytest.raises(MMEBError, match="scale"):
        cache.ensure_sample("huge")


def test_one_full_size_task_matches_the_mmeb_reference_sizes(tmp_path: Path) -> None:
    """A twin at MMEB size: 1000 queries x 1000 candidates, the oracle perfect, no data notes."""
    from mmeb.engine import evaluate_task
    from mmeb.sample.generate import generate
    from mmeb.tasks import get_task

    task = get_task("Full-ImageNet-1K")
    assert task.source == "sample-full"
    root = generate(tmp_path / "full", scale="full", tasks=[task.name], train_pairs=8, workers=1)
    result = evaluate_task(OracleEncoder(root), task, data_dir=str(root / "eval"),
                           batch_size=1024, progress=False)
    reference = get_task("ImageNet-1K")
    assert result.counts["rows"] == reference.num_queries == 1000
    assert result.counts["candidates_per_query"]["max"] == reference.num_candidates == 1000
    assert result.metrics["hit@1"] == 1.0
    assert result.notes == []
