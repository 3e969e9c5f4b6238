"""VLM backbones in the trainer: the eval adapter's formatting and pooling, LoRA on the language
model, GradCache, and output folders that ``mmeb run --checkpoint`` loads unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_vlm import LLAVA_NEXT, QWEN2VL, TOKENIZER_FILES
from vlm2vec_fixtures import losses, quick, small_suite

from mmeb.cli import main
from mmeb.errors import ModelError
from mmeb.items import Item, Side
from mmeb.registry import load_model
from vlm2vec.config import build_config
from vlm2vec.data import Input, load_train_data
from vlm2vec.gradcache import gradcache_step, plain_step
from vlm2vec.loss import info_nce
from vlm2vec.model import build_model
from vlm2vec.trainer import train
from vlm2vec.vlm_model import LM_PROJECTIONS, VLMEmbedder, as_item

pytest.importorskip("peft")
CONFIG = Path(__file__).resolve().parents[1] / "vlm2vec" / "configs" / "sample-qwen2vl-tiny.yaml"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real-format Qwen2-VL checkpoint, alone in a folder (as a base model is)."""
    folder = tmp_path_factory.mktemp("qwen2vl-base")
    for name in ("config.json", "model.safetensors", *TOKENIZER_FILES):
        if (QWEN2VL / name).is_file():
            shutil.copy2(QWEN2VL / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_suite(tmp_path_factory)


def settings(suite: Path, base: Path, out: Path, **overrides: object) -> dict[str, object]:
    values = quick(suite / "train", out, model="qwen2vl-2b", checkpoint=str(base),
                   model_args={"image_resolution": "low"}, finetune="lora",
                   global_batch_size=6, max_steps=2, learning_rate=5e-3)
    values.update(overrides)
    return values


def some_inputs(suite: Path, n: int = 4) -> list[Input]:
    c = build_config(overrides=quick(suite / "train", suite / "unused",
                                     subsets=["Sample-Shapes", "Sample-Caption-t2i"]))
    data = load_train_data(data=c.data, subsets=c.subsets, split=c.split, image_dir=c.image_dir,
                           max_per_subset=c.max_per_subset, subset_sampling=c.subset_sampling,
                           seed=c.seed, hard_negatives=False, check_images=c.check_images,
                           skip_bad_rows=c.skip_bad_rows)
    pairs = [s.pair(i, False) for s in data.subsets for i in range(n // 2)]
    return [p.query for p in pairs] + [p.target for p in pairs]


def trainer_vectors(model: VLMEmbedder, inputs: list[Input], side: str) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model.encode(model.collate(inputs, side)).numpy()


def eval_vectors(folder: Path, inputs: list[Input], side: Side) -> np.ndarray:
    encoder = load_model("vlm2vec-qwen2vl-2b", checkpoint=str(folder), device="cpu",
                         model_args={"image_resolution": "low"})
    return encoder.encode([as_item(i) for i in inputs], side=side)


def test_collate_and_encode_are_the_eval_adapters(suite: Path, base: Path, tmp_path: Path
                                                  ) -> None:
    model = build_model(build_config(overrides=settings(suite, base, tmp_path, finetune="full")))
    assert isinstance(model, VLMEmbedder)
    inputs = some_inputs(suite)
    batch = model.collate(inputs, "query")
    encoder = load_model("vlm2vec-qwen2vl-2b", checkpoint=str(base), device="cpu",
                         model_args={"image_resolution": "low"})
    items = [Item(raw=i.text, text=i.text, image_path=i.image) for i in inputs]
    expected = [encoder._prepare(it, side=Side.QUERY, task=None) for it in items]  # type: ignore[attr-defined]
    # The same token ids (image tokens expanded for the resized image) and the same pixels.
    for row, prep in enumerate(expected):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert torch.equal(ids, prep["input_ids"])
    with_pixels = [p["pixel_values"] for p in expected if "pixel_values" in p]
    assert torch.equal(batch["pixel_values"], torch.cat(with_pixels))
    model.train()
    vectors = model.encode(batch)
    assert vectors.requires_grad
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(len(inputs)), atol=1e-5)


def test_lora_targets_only_the_language_model_projections(suite: Path, base: Path,
                                                          tmp_path: Path) -> None:
    model = build_model(build_config(overrides=settings(suite, base, tmp_path)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in n and ".language_model." in n for n in trainable)
    for projection in LM_PROJECTIONS:
        assert any(f".{projection}.lora_A" in n for n in trainable), projection
    with pytest.raises(ModelError, match="no module of the vlm2vec-qwen2vl-2b language model"):
        build_model(build_config(overrides=settings(suite, base, tmp_path,
                                                    lora_target_modules=["qkv"])))
    with pytest.raises(ModelError, match="model_args 'device' is set by the trainer"):
        build_model(build_config(overrides=settings(suite, base, tmp_path,
                                                    model_args={"device": "cpu"})))


def test_gradient_checkpointing_uses_the_hf_switch(suite: Path, base: Path, tmp_path: Path
                                                   ) -> None:
    model = build_model(build_config(overrides=settings(suite, base, tmp_path,
                                                        gradient_checkpointing=True)))
    assert isinstance(model, VLMEmbedder)
    hf_model = model.encoder.model  # type: ignore[attr-defined]
    assert hf_model.is_activation_checkpointing
    plain = build_model(build_config(overrides=settings(suite, base, tmp_path)))
    assert not plain.encoder.model.is_activation_checkpointing  # type: ignore[attr-defined]


def test_gradcache_equals_the_plain_step(suite: Path, base: Path, tmp_path: Path) -> None:
    model = build_model(build_config(overrides=settings(suite, base, tmp_path,
                                                        finetune="full")))
    model.train()
    inputs = some_inputs(suite, 4)
    queries, targets = inputs[:4], inputs[4:]

    def sides(rows: slice) -> dict[str, dict[str, object]]:
        return {"query": model.collate(queries[rows], "query"),
                "target": model.collate(targets[rows], "target")}

    def loss_fn(reps: dict[str, torch.Tensor]) -> torch.Tensor:
        return info_nce(reps["query"], reps["target"], temperature=0.05)

    def grads() -> dict[str, torch.Tensor]:
        out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    plain = plain_step(model, sides(slice(0, 4)), loss_fn)
    expected = grads()
    cached = gradcache_step(model, [sides(slice(0, 2)), sides(slice(2, 4))], loss_fn)
    got = grads()
    assert torch.allclose(cached, plain, rtol=1e-5)
    assert set(got) == set(expected)
    assert len(expected) > 20  # vision tower and language model
    for name, grad in expected.items():
        scale = float(grad.abs().max()) or 1.0
        assert float((got[name] - grad).abs().max()) <= 1e-5 * scale, name


@pytest.mark.parametrize("merge", [False, True])
def test_output_folder_gives_the_trainers_vectors_under_mmeb(suite: Path, base: Path,
                                                              tmp_path: Path, merge: bool) -> None:
    out = tmp_path / "run"
    config = build_config(overrides=settings(suite, base, out, merge=merge))
    model = build_model(config)
    assert isinstance(model, VLMEmbedder)
    with torch.no_grad():  # stand-in for training: adapters that change the vectors
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save(out)
    if merge:
        assert not (out / "adapter_config.json").exists()
        assert (out / "model.safetensors").is_file()
        assert (out / "preprocessor_config.json").is_file()
        assert (out / "tokenizer.json").is_file()
    else:
        adapter = json.loads((out / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(base.resolve())
        assert (out / "adapter_model.safetensors").is_file()
        assert not (out / "model.safetensors").exists()
        assert (out / "preprocessor_config.json").is_file()  # as the released adapters
    inputs = some_inputs(suite)
    for side in (Side.QUERY, Side.TARGET):
        ours = trainer_vectors(model, inputs, side.value)
        theirs = eval_vectors(out, inputs, side)
        assert np.abs(ours - theirs).max() <= 1e-5
    untrained = eval_vectors(base, inputs, Side.QUERY)
    assert np.abs(untrained - trainer_vectors(model, inputs, "query")).max() > 1e-3


def test_full_finetuning_saves_a_model_folder_mmeb_loads(suite: Path, base: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "full"
    train(build_config(overrides=settings(suite, base, out, finetune="full", max_steps=1,
                                          warmup_steps=0, learning_rate=1e-3)))
    assert (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    model = build_model(build_config(overrides=settings(suite, base, tmp_path / "x",
                                                        finetune="full", checkpoint=str(out))))
    assert isinstance(model, VLMEmbedder)
    inputs = some_inputs(suite)
    ours = trainer_vectors(model, inputs, "query")
    assert np.abs(ours - eval_vectors(out, inputs, Side.QUERY)).max() <= 1e-5
    assert np.abs(ours - eval_vectors(base, inputs, Side.QUERY)).max() > 1e-4


@pytest.mark.slow
def test_sample_config_trains_and_its_output_evaluates(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = build_config(str(CONFIG), ["--checkpoint", str(base), "--output_dir", str(out),
                                        "--progress", "false"])
    train(config)
    curve = [loss for _, loss in losses(out)]
    assert len(curve) == config.max_steps
    k = 5
    assert sum(curve[-k:]) / k < sum(curve[:k]) / k, curve
    results = tmp_path / "results"
    result = CliRunner().invoke(main, [
        "run", "--model", "vlm2vec-qwen2vl-2b", "--checkpoint", str(out), "--split", "sample",
        "--tasks", "Sample-Shapes", "--limit", "20", "--model-arg", "image_resolution=low",
        "--output-dir", str(results), "--no-progress"])
    assert result.exit_code == 0, result.output
    (saved,) = results.rglob("Sample-Shapes.json")
    score = json.loads(saved.read_text())
    assert score["main_metric"] == "hit@1"
    assert score["counts"]["rows"] == 20
    assert score["counts"]["embedding_dim"] == 64  # the tiny model's hidden size
    assert 0.0 <= score["main_score"] <= 1.0
    assert score["config"]["adapter"]["lora_adapter"] == str(out)


def test_llava_next_adapter_spares_the_clip_tower_and_round_trips(suite: Path,
                                                                 tmp_path: Path) -> None:
    # CLIP's attention also has q_proj/k_proj/v_proj: only the language model's get adapters.
    llava = tmp_path / "llava-base"
    shutil.copytree(LLAVA_NEXT, llava, ignore=shutil.ignore_patterns("*.png", "*.npy"))
    out = tmp_path / "run"
    model = build_model(build_config(overrides=settings(suite, llava, out, model="llava-next")))
    assert isinstance(model, VLMEmbedder)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".language_model." in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert any("vision_tower" in n and "q_proj" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save(out)
    inputs = some_inputs(suite)
    encoder = load_model("vlm2vec-llava-next", checkpoint=str(out), device="cpu",
                         model_args={"image_resolution": "low"})
    theirs = encoder.encode([as_item(i) for i in inputs], side=Side.QUERY)
    assert np.abs(trainer_vectors(model, inputs, "query") - theirs).max() <= 1e-5
