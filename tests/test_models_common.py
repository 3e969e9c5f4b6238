"""What every two-tower adapter must do, checked on a tiny checkpoint of each family."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import (
    checkpoint,
    encode,
    image_item,
    library,
    text_item,
    vqa_item,
    write_images,
)

from mmeb.encoder import ALL_MODALITIES, Encoder, encoder_config, encoder_modalities
from mmeb.errors import ModelError
from mmeb.models.two_tower import TwoTowerEncoder
from mmeb.registry import BUILTIN_MODELS, load_model, registered_models, resolve_factory

# Every built-in two-tower adapter, as the registry lists them: adding one runs these tests.
FAMILIES = [e.name for e in BUILTIN_MODELS if not e.alias_of
            and isinstance(f := resolve_factory(e.name), type) and issubclass(f, TwoTowerEncoder)]
EXTRAS = {e.name: e.extra for e in BUILTIN_MODELS}
QUESTION = "what is the color of the car in this photo?"


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tiny(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint(family, tmp_path_factory)


@pytest.fixture(scope="module")
def encoder(family: str, tiny: Path) -> Encoder:
    return load_model(family, checkpoint=str(tiny))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"))


def test_every_two_tower_family_has_a_tiny_checkpoint() -> None:
    from tiny_checkpoints import BUILDERS

    assert len(FAMILIES) >= 5
    assert set(FAMILIES) <= set(BUILDERS), "add a tiny-checkpoint builder for the new family"


def test_registered_with_default_checkpoint_and_extra(family: str) -> None:
    entry = registered_models()[family]
    assert entry.target.startswith("mmeb.models.")
    assert entry.default_checkpoint
    assert entry.extra == EXTRAS[family]


def test_each_modality_encodes_to_float32_rows(encoder: Encoder, images: list[Path]) -> None:
    items = [text_item("a photo of a cat"), image_item(images[0]), vqa_item(images[1], QUESTION)]
    vectors = encode(encoder, items)
    assert vectors.dtype == np.float32
    assert vectors.ndim == 2
    assert vectors.shape[0] == 3
    assert np.isfinite(vectors).all()
    assert not np.allclose(vectors[0], vectors[1])
    assert not np.allclose(vectors[1], vectors[2])
    assert encode(encoder, []).shape == (0, vectors.shape[1])


def test_declares_every_modality_and_a_json_config(encoder: Encoder, tiny: Path) -> None:
    assert encoder_modalities(encoder) == ALL_MODALITIES
    config = encoder_config(encoder)
    json.dumps(config)
    assert config["checkpoint"] == str(tiny)
    assert (config["fusion"], config["instruction"], config["dtype"]) == ("sum", "none", "float32")


def test_image_plus_text_is_the_sum_of_both_towers(encoder: Encoder, images: list[Path]) -> None:
    fused, image_only, question = encode(
        encoder, [vqa_item(images[0], QUESTION), image_item(images[0]), text_item(QUESTION)]
    )
    np.testing.assert_allclose(fused, image_only + question, atol=1e-5)


def test_prepend_feeds_the_instruction_to_the_text_tower(
    family: str, tiny: Path, encoder: Encoder, images: list[Path]
) -> None:
    vqa, bare = vqa_item(images[0], QUESTION), image_item(images[1])
    prepend = load_model(family, checkpoint=str(tiny), model_args={"instruction": "prepend"})
    got = encode(prepend, [vqa, bare])
    assert encoder_config(prepend)["instruction"] == "prepend"
    image0, image1, with_instruction, instruction_alone = encode(
        encoder,
        [image_item(images[0]), image_item(images[1]),
         text_item(f"{vqa.instruction} {QUESTION}"), text_item(str(bare.instruction))],
    )
    np.testing.assert_allclose(got[0], image0 + with_instruction, atol=1e-5)
    # An image whose only text is the instruction becomes an image+text input.
    np.testing.assert_allclose(got[1], image1 + instruction_alone, atol=1e-5)
    assert not np.allclose(got[0], encode(encoder, [vqa])[0])


def test_batches_give_the_vectors_of_one_call(
    family: str, tiny: Path, encoder: Encoder, images: list[Path]
) -> None:
    items = [vqa_item(path, f"{QUESTION} {i}") for i, path in enumerate(images)]
    items += [text_item("a red car"), text_item("a blue photo of a dog with a cat")]
    small = load_model(family, checkpoint=str(tiny), model_args={"batch_size": 2})
    np.testing.assert_allclose(encode(small, items), encode(encoder, items), atol=1e-5)


def test_bfloat16_stays_close_to_float32(
    family: str, tiny: Path, encoder: Encoder, images: list[Path]
) -> None:
    items = [text_item("a photo of a cat"), image_item(images[0]), vqa_item(images[1], QUESTION)]
    low = load_model(family, checkpoint=str(tiny), dtype="bfloat16")
    assert encoder_config(low)["dtype"] == "bfloat16"
    got, want = encode(low, items), encode(encoder, items)
    assert got.dtype == np.float32
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.999


def test_missing_library_names_the_extra(
    family: str, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, library(family), None)  # makes the import fail
    with pytest.raises(ModelError, match=rf'pip install "mmeb\[{EXTRAS[family]}\]"'):
        load_model(family, checkpoint=str(tiny))


def test_unknown_checkpoint_offline_is_one_clear_error(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip(library(family))
    default = registered_models()[family].default_checkpoint
    unknown = "nobody-here/no-such-model"
    for given, shown in ((None, default), (unknown, unknown)):
        with pytest.raises(ModelError) as error:
            load_model(family, checkpoint=given, device="cpu")
        assert str(error.value) == (
            f"cannot load checkpoint {shown} offline; pass --checkpoint DIR with a local copy "
            "or unset HF_HUB_OFFLINE"
        )


def test_missing_local_directory_is_reported_as_such(family: str) -> None:
    pytest.importorskip(library(family))
    with pytest.raises(ModelError, match=r"not found: ./no/such/checkpoint"):
        load_model(family, checkpoint="./no/such/checkpoint")


def test_bad_options_are_refused_before_loading(family: str) -> None:
    with pytest.raises(ModelError, match="unknown fusion policy"):
        load_model(family, checkpoint="unused", model_args={"fusion": "concat"})
    with pytest.raises(ModelError, match="does not take --model-arg colour"):
        load_model(family, checkpoint="unused", model_args={"colour": "red"})


E2E_TASKS = "Sample-ShapeVQA,Sample-Cards-it2it"  # image+text queries; text and image+text targets


def test_mmeb_run_on_the_sample_suite(family: str, tiny: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mmeb.cli import main

    out = tmp_path / "results"
    args = ["run", "--model", family, "--checkpoint", str(tiny), "--split", "sample",
            "--tasks", E2E_TASKS, "--limit", "3", "--output-dir", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*/*.json"))
    assert sorted(f.stem for f in files) == sorted(E2E_TASKS.split(","))
    encoder = load_model(family, checkpoint=str(tiny))
    for file in files:
        doc = json.loads(file.read_text())
        adapter = doc["config"]["adapter"]
        assert adapter["family"] == family
        assert adapter["checkpoint"] == str(tiny)
        assert (adapter["fusion"], adapter["instruction"]) == ("sum", "none")
        assert doc["counts"]["rows"] == 3
        assert doc["main_score"] == pytest.approx(naive_hit1(encoder, doc["task"], 3), abs=1e-6)


def naive_hit1(encoder: Encoder, task_name: str, rows: int) -> float:
    """hit@1 of the first ``rows`` queries, computed row by row outside the engine: cosine of
    the query with each of its candidates, credit 1/(1 + ties) when nothing beats the gold."""
    from mmeb.data import load_task_inputs
    from mmeb.items import Side
    from mmeb.tasks import get_task

    task = get_task(task_name)
    inputs, _ = load_task_inputs(task, limit=rows)
    total = 0.0
    for row in range(inputs.num_rows):
        query = inputs.queries[inputs.query_index[row]]
        candidates = [inputs.targets[c] for c in inputs.candidates[row] if c >= 0]
        q = np.asarray(encoder.encode([query], side=Side.QUERY, task=task), np.float64)[0]
        t = np.asarray(encoder.encode(candidates, side=Side.TARGET, task=task), np.float64)
        scores = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        above = int((scores[1:] > scores[0] + 1e-9).sum())
        ties = int((np.abs(scores[1:] - scores[0]) <= 1e-9).sum())
        total += 0.0 if above else 1.0 / (1 + ties)
    return total / inputs.num_rows


@pytest.mark.slow
def test_mmeb_run_on_the_whole_sample_split(family: str, tiny: Path, tmp_path: Path) -> None:
    """The issue's end-to-end check: every sample task, every query (run with -m slow)."""
    from click.testing import CliRunner

    from mmeb.cli import main
    from mmeb.tasks import select_tasks

    out = tmp_path / "results"
    args = ["run", "--model", family, "--checkpoint", str(tiny), "--split", "sample",
            "--output-dir", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    docs = [json.loads(f.read_text()) for f in sorted(out.glob("*/*.json"))]
    assert sorted(d["task"] for d in docs) == sorted(t.name for t in select_tasks("sample"))
    assert all(d["counts"]["rows"] == d["counts"]["rows_in_data"] for d in docs)
    assert "| overall (12)" in result.output
    assert "[" in result.output


def test_results_name_the_revision_that_was_loaded(
    family: str, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local folder is named by a digest of its contents; a Hub id is read from one snapshot
    at the registry's pinned revision, and the snapshot's commit is recorded."""
    import dataclasses
    import shutil

    import huggingface_hub

    import mmeb.registry as registry

    local = load_model(family, checkpoint=str(tiny)).config
    assert str(local["revision"]).startswith("local-")
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    assert load_model(family, checkpoint=str(copy)).config["revision"] == local["revision"]
    (copy / "README.md").write_text("another file\n")
    assert load_model(family, checkpoint=str(copy)).config["revision"] != local["revision"]
    if family == "openclip":
        return  # open_clip resolves hf-hub: ids itself

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "snapshots" / commit
    shutil.copytree(tiny, snapshot)
    asked: list[tuple[str, str | None]] = []

    def fake_snapshot(repo_id: str, *, revision: str | None = None, **_: object) -> str:
        asked.append((repo_id, revision))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    pinned = "fedcba9876543210fedcba9876543210fedcba98"
    entries = tuple(dataclasses.replace(e, default_checkpoint="org/tiny", revision=pinned)
                    if e.name == family else e for e in registry.BUILTIN_MODELS)
    monkeypatch.setattr(registry, "BUILTIN_MODELS", entries)
    config = load_model(family).config
    assert asked == [("org/tiny", pinned)]
    assert (config["checkpoint"], config["revision"]) == ("org/tiny", commit)
    load_model(family, checkpoint="org/other")
    assert asked[-1] == ("org/other", None)  # a checkpoint the user names is not pinned
