"""vlm2vec-tiny: the packaged model, its recipe and `mmeb run` without options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmeb_fixtures import invoke

from mmeb.models.vlm2vec_tiny import MANIFEST, file_digests, packaged_folder, verify_packaged
from mmeb.tasks import get_collection
from vlm2vec import tiny

pytest.importorskip("transformers")

SAMPLE = [t.name for t in get_collection("sample")]


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    from mmeb.sample import ensure_sample

    # The session's cache, as the autouse fixture sets it for each test (module fixtures run
    # before it).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMEB_CACHE", str(tmp_path_factory.getbasetemp() / "mmeb-cache"))
        return ensure_sample()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((packaged_folder() / MANIFEST).read_text())


# -- the shipped files ------------------------------------------------------------------------


def test_shipped_files_match_their_recorded_hashes(manifest):
    assert verify_packaged() == []
    assert set(manifest["sha256"]) >= {"config.json", "model.safetensors", "tokenizer.json",
                                       "preprocessor_config.json"}
    assert (packaged_folder() / "model.safetensors").stat().st_size <= 10 * 2**20


def test_a_changed_shipped_file_is_reported(tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(packaged_folder(), copy)
    (copy / "tokenizer_config.json").write_text("{}")
    (copy / "extra.txt").write_text("x")
    assert verify_packaged(copy) == ["extra.txt", "tokenizer_config.json"]


def test_no_eval_query_with_its_answer_is_in_the_training_split(manifest, sample_root):
    overlap = manifest["train_eval_overlap"]
    assert set(overlap) == set(SAMPLE)
    assert all(v["pairs_in_train"] == 0 for v in overlap.values())
    # Recorded at build time; the same figures come out of today's copy of the suite.
    assert tiny.overlap_report(sample_root) == overlap


def test_the_packaged_model_loads_through_the_qwen2vl_adapter():
    from mmeb.models.qwen2vl import Qwen2VLEncoder
    from mmeb.registry import load_model, registered_models

    assert registered_models()["vlm2vec-tiny"].default_checkpoint == "package:weights/vlm2vec-tiny"
    encoder = load_model("vlm2vec-tiny", device="cpu")
    assert isinstance(encoder, Qwen2VLEncoder)
    assert Path(encoder.checkpoint) == packaged_folder()
    assert encoder.config["revision"].startswith("local-")
    assert encoder.name == "vlm2vec-tiny"
    # Recorded by its package name, not the install folder: another install of the same
    # package accepts the results (the files' digest is the revision above).
    assert encoder.config["checkpoint"] == "package:weights/vlm2vec-tiny"
    same = load_model("vlm2vec-tiny", checkpoint="package:weights/vlm2vec-tiny", device="cpu")
    assert same.config == encoder.config


@pytest.fixture(scope="module")
def scores(sample_root, tmp_path_factory) -> dict[str, tuple[float, float]]:
    """Task -> (hit@1, chance) of the packaged model on the whole sample suite."""
    import mmeb
    from mmeb.registry import load_model

    outcome = mmeb.evaluate(load_model("vlm2vec-tiny", device="cpu"), tasks=SAMPLE,
                            output_dir=tmp_path_factory.mktemp("tiny-results"), progress=False)
    return {d["task"]: (d["metrics"]["hit@1"], d["chance"]) for d in outcome.results}


def test_the_packaged_model_meets_the_targets_three_times_chance_and_mean_one_half(scores):
    from mmeb.tasks import get_task

    by_meta: dict[str, list[tuple[float, float]]] = {}
    for name, value in scores.items():
        by_meta.setdefault(get_task(name).meta_task, []).append(value)
    assert set(by_meta) == {"classification", "vqa", "retrieval", "grounding"}
    for meta, values in by_meta.items():
        hit = sum(h for h, _ in values) / len(values)
        chance = sum(c for _, c in values) / len(values)
        assert hit >= 3 * chance, meta
    # Far above the random baseline overall (which scores chance, about 1.3% here), and at
    # least half of all queries right on average over the twelve tasks.
    mean_chance = sum(c for _, c in scores.values()) / len(scores)
    mean = sum(h for h, _ in scores.values()) / len(scores)
    assert mean >= 10 * mean_chance
    assert mean >= 0.5


def test_the_packaged_model_scores_what_its_manifest_recorded(scores, manifest):
    recorded = manifest["sample_scores"]
    assert set(recorded) == set(scores)
    for name, (hit, _) in scores.items():
        # Deterministic on CPU; a different BLAS may flip a near tie (one query of 150).
        assert abs(hit - recorded[name]) <= 1.5 / 150, name


# -- the tokenizer ----------------------------------------------------------------------------


def test_the_tokenizer_reads_words_and_appends_the_end_token():
    vocabulary = tiny.fit_vocabulary(["the red circle.", 'Find the ROSE "card"', "the end"])
    assert vocabulary[0] == "the"  # most frequent first
    tokenizer = tiny.build_tokenizer(vocabulary)
    ids = tokenizer(f"{tiny.IMAGE}\nFind the ROSE \"x\".\n")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == [tiny.IMAGE, "Find", "the", "ROSE", '"', tiny.UNK, '"', ".", tiny.END]


@pytest.mark.parametrize(("patch", "merge"), [(16, 2), (8, 4)])
def test_a_finer_patch_grid_keeps_the_image_tokens_and_loads_through_the_adapter(
        tmp_path, patch, merge):
    import numpy as np
    from PIL import Image

    from mmeb.items import Item
    from mmeb.registry import load_model

    folder = tiny.build_initial(tmp_path / "init", ["Identify the object shown in the image"],
                                shape=tiny.TinyShape(patch_size=patch, merge_size=merge))
    encoder = load_model("vlm2vec-tiny", checkpoint=str(folder), device="cpu")
    picture = Image.fromarray(np.full((96, 96, 3), 200, dtype=np.uint8))
    items = [Item(raw="<|image_1|>\nIdentify the object shown in the image\n",
                  text="Identify the object shown in the image", pil_image=picture)]
    prepared = encoder._prepare(items[0], side="query", task=None)
    ids = prepared["input_ids"].tolist()
    image_id = encoder.tokenizer.convert_tokens_to_ids(tiny.IMAGE)
    # (96 / (patch * merge))^2 = 9 language-model tokens, one per cell of the sample suite's
    # 3 x 3 grid, at either geometry; the vision tower sees (96 / patch)^2 patches.
    assert ids.count(image_id) == 9
    assert int(prepared["image_grid_thw"][0, 1:].prod()) == (96 // patch) ** 2
    vectors = encoder.encode(items, side="query")
    assert vectors.shape == (1, 128)
    assert np.isfinite(vectors).all()


def test_each_image_token_covers_one_cell_of_the_sample_scenes():
    # The geometry's reason (TinyShape): one language-model token per cell of the 3 x 3 scene
    # grid, every cell's centre on the corner of four patches, so an object meets the patch
    # grid alike in every cell.
    from mmeb.sample.render import GRID, Layout

    shape = tiny.TinyShape()
    token = shape.patch_size * shape.merge_size
    layout = Layout(shape.image_side)
    assert shape.image_side == GRID * token == GRID * layout.cell
    centres = {layout.centre(cell) for cell in range(GRID * GRID)}
    assert len(centres) == GRID * GRID
    for x, y in centres:
        assert x % token == y % token == token // 2
        assert x % shape.patch_size == y % shape.patch_size == 0


def test_every_eval_word_is_in_the_vocabulary_fitted_to_training_texts(sample_root):
    vocabulary = tiny.fit_vocabulary(tiny.training_texts(sample_root))
    overlap = tiny.vocabulary_overlap(vocabulary, tiny.eval_texts(sample_root))
    assert overlap["words"] > 10_000
    assert overlap["unknown"] == 0


# -- the recipe -------------------------------------------------------------------------------


def test_the_recipe_trains_its_loss_falls_and_a_rerun_reuses_finished_stages(tmp_path, sample_root):
    from vlm2vec.cli import main
    from vlm2vec.recipe import STAGES

    out = tmp_path / "run"
    quick = ["tiny", "--out", str(out), "--limit", "4", "--max_steps", "16", "--warmup_steps",
             "2", "--global_batch_size", "16", "--save_steps", "0"]
    main(quick)
    losses = [json.loads(line)["loss"] for line in
              (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1
    ship = out / "vlm2vec-tiny"
    manifest = json.loads((ship / MANIFEST).read_text())
    assert manifest["sha256"] == file_digests(ship)
    assert [stage["steps"] for stage in manifest["training"]] == [16, 16, 16, 16]
    assert set(manifest["sample_scores"]) == set(SAMPLE)
    assert manifest["sample_scores_limit"] == 4
    assert verify_packaged(ship) == []

    # A rerun into the same folder reuses every finished stage of the same config; a stage
    # that did not finish is trained again, and so is every stage after it (its input changed).
    stages = [out / folder for folder, _ in STAGES]

    def written() -> list[int]:  # when each stage's summary (its last file) was written
        return [(stage / "summary.json").stat().st_mtime_ns for stage in stages]

    finished = written()
    main(quick)
    assert written() == finished
    assert json.loads((ship / MANIFEST).read_text())["sha256"] == manifest["sha256"]
    (stages[1] / "summary.json").unlink()
    main(quick)
    again = written()
    assert again[0] == finished[0]
    assert all(a != b for a, b in zip(again[1:], finished[1:], strict=True))
    # The same seed retrains the same model, byte for byte.
    assert json.loads((ship / MANIFEST).read_text())["sha256"] == manifest["sha256"]


def test_the_shipped_model_was_trained_by_the_committed_recipe(manifest):
    # A recipe edited without retraining (or a model installed from an edited recipe) would
    # make `vlm2vec tiny` rebuild something other than what ships.
    from vlm2vec.config import build_config
    from vlm2vec.recipe import recorded_config, stage_configs

    assert manifest["recipe"] == "vlm2vec tiny"
    committed = [recorded_config(build_config(path, [])) for path in stage_configs()]
    defaults = recorded_config(build_config(overrides={}))
    for shipped, recipe in zip(manifest["config"], committed, strict=True):
        # A key the trainer gained after this model was trained may be missing from its
        # record, but only at its default: the behaviour the model was trained with.
        for key in recipe.keys() - shipped.keys():
            assert recipe[key] == defaults[key], key
        assert shipped == {k: v for k, v in recipe.items() if k in shipped}
    assert [stage["steps"] for stage in manifest["training"]] == [
        stage["max_steps"] for stage in committed]


def shape_of(folder: Path) -> tiny.TinyShape:
    """The TinyShape a Qwen2-VL checkpoint folder was built with (its config files)."""
    config = json.loads((folder / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    side = json.loads((folder / "preprocessor_config.json").read_text())["max_pixels"] ** 0.5
    return tiny.TinyShape(
        hidden_size=text["hidden_size"], intermediate_size=text["intermediate_size"],
        layers=text["num_hidden_layers"], heads=text["num_attention_heads"],
        kv_heads=text["num_key_value_heads"], vision_dim=vision["embed_dim"],
        vision_depth=vision["depth"], vision_heads=vision["num_heads"], image_side=int(side),
        patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"],
        vision_init_std=vision["initializer_range"])


def test_the_shipped_architecture_is_the_one_the_recipe_builds(tmp_path):
    # The recipe's architecture is TinyShape's defaults, not a config key, so the manifest test
    # above cannot see a changed default: the shipped folder would no longer be rebuildable.
    built = tiny.build_initial(tmp_path / "init", ["Identify the object shown in the image"])
    assert shape_of(built) == tiny.TinyShape()
    assert shape_of(packaged_folder()) == tiny.TinyShape()


def test_the_recipe_refuses_what_it_sets_itself(tmp_path):
    from vlm2vec.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["tiny", "--out", str(tmp_path), "--checkpoint", "x"])
    assert stop.value.code == 1


# -- `mmeb run` without options ---------------------------------------------------------------


def test_run_without_a_model_evaluates_the_tiny_model_beside_random(tmp_path, sample_root):
    out = tmp_path / "results"
    result = invoke("run", "--output-dir", str(out), "--limit", "8", "--no-progress",
                    "--tasks", "Sample-Shapes,Sample-Caption-t2i")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["random", "vlm2vec-tiny"]
    header = next(line for line in result.output.splitlines() if line.startswith("| dataset"))
    assert "vlm2vec-tiny" in header
    assert "random" in header
    assert "random: at chance level on" in result.output
    assert "warning:" not in result.output


def test_options_of_one_model_need_the_model(tmp_path):
    result = invoke("run", "--output-dir", str(tmp_path), "--checkpoint", "x")
    assert result.exit_code != 0
    assert "--checkpoint needs --model" in result.output
    assert not any(tmp_path.iterdir())
