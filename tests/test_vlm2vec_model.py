"""The model side: LoRA/DoRA through peft, saving merged weights, checkpointing, precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vlm2vec_fixtures import small_suite

from mmeb.errors import ModelError
from vlm2vec.cli import example_config
from vlm2vec.config import build_config
from vlm2vec.data import Input
from vlm2vec.model import ToyEmbedder, build_model, unwrapped
from vlm2vec.trainer import autocast_dtype, list_checkpoints, rng_state, set_rng_state


def inputs(suite: Path) -> list[Input]:
    images = sorted((suite / "train" / "images" / "Sample-Shapes" / "Train").iterdir())[:3]
    return [Input("<|image_1|>\nIdentify the object\n", str(p)) for p in images] + [
        Input("orange diamond", None), Input("", None)]


def perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def test_lora_trains_adapters_only_and_saves_merged_weights(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = build_model(build_config(None, ["--preset", "dora-code", "--model_args",
                                            "{dim: 16, vocab: 64, image_size: 16}"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in n for n in trainable)
    assert any("magnitude" in n for n in trainable)  # DoRA's magnitude vector
    perturb(model)
    model.eval()
    batch = model.collate(inputs(small_suite(tmp_path_factory)), "query")
    with torch.no_grad():
        expected = model.encode(batch)
    model.save(tmp_path / "out")
    loaded = ToyEmbedder.load(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(batch), expected, rtol=1e-5, atol=1e-5)
    assert expected.shape == (5, 16)


def test_full_finetuning_trains_everything() -> None:
    model = build_model(build_config(None, ["--finetune", "full"]))
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_checkpointing_gives_the_same_gradients(
    tmp_path_factory: pytest.TempPathFactory
) -> None:
    grads = []
    for on in (False, True):
        model = build_model(build_config(None, ["--finetune", "full", "--model_args",
                                                "{dim: 16, vocab: 64, image_size: 16}",
                                                "--gradient_checkpointing", str(on)]))
        assert unwrapped(model.net).checkpointing is on  # type: ignore[attr-defined]
        batch = model.collate(inputs(small_suite(tmp_path_factory)), "query")
        model.encode(batch).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad)


def test_model_errors_are_one_line() -> None:
    with pytest.raises(ModelError, match="model 'phi3' is not available for training"):
        build_model(build_config(None, ["--model", "phi3"]))
    with pytest.raises(ModelError, match=r"model_args for toy: .*'width'.*valid: dim"):
        build_model(build_config(None, ["--model_args", "{width: 3}"]))
    with pytest.raises(ModelError, match="lora_target_modules"):
        build_model(build_config(None, ["--lora_target_modules", "nothing_here"]))


def test_precision_is_bf16_on_gpu_and_fp32_on_cpu() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    auto = build_config()
    assert autocast_dtype(auto, cpu) is None
    assert autocast_dtype(auto, gpu) is torch.bfloat16
    assert autocast_dtype(build_config(None, ["--precision", "bf16"]), cpu) is torch.bfloat16
    assert autocast_dtype(build_config(None, ["--precision", "fp32"]), gpu) is None


def test_rng_states_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.save(rng_state(torch.device("cpu")), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_half_written_checkpoints_are_never_listed(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / ".step-00000004.tmp").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-00000002").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002"]


def test_the_example_config_is_valid_and_shipped() -> None:
    config = build_config(example_config())
    assert config.data == "sample"
    assert config.model == "toy"
    assert config.gc_chunk_size > 0
