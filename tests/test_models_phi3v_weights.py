"""Phi-3.5-V weights: the checkpoints' key layout, sharding, and LoRA / DoRA adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from phi3v_helpers import (
    PARITY,
    TINY_VISION,
    encode,
    item_image,
    make_adapter,
    parity_items,
    parity_tensors,
    write_checkpoint,
)

from mmeb.errors import ModelError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from mmeb.models.phi3v.processing import Phi3VProcessor  # noqa: E402
from mmeb.models.phi3v.weights import checkpoint_key, load_model  # noqa: E402


def spec_keys() -> dict[str, tuple[int, ...]]:
    """Every tensor of a Phi-3.5-V checkpoint, named and shaped as the spec's table lists them,
    for the sizes of the parity config.json and tiny CLIP tower."""
    cfg = json.loads((PARITY / "config.json").read_text())
    vis = json.loads(TINY_VISION.read_text())
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    c, ci = vis["hidden_size"], vis["intermediate_size"]
    keys: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, h),
        "model.norm.weight": (h,),
        "lm_head.weight": (vocab, h),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        keys |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.qkv_proj.weight": (3 * h, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_up_proj.weight": (2 * inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        }
    v = "model.vision_embed_tokens."
    keys |= {
        v + "glb_GN": (1, 1, 4 * c),
        v + "sub_GN": (1, 1, 1, 4 * c),
        v + "img_projection.0.weight": (h, 4 * c),
        v + "img_projection.0.bias": (h,),
        v + "img_projection.2.weight": (h, h),
        v + "img_projection.2.bias": (h,),
    }
    t = v + "img_processor.vision_model."
    keys |= {
        t + "embeddings.class_embedding": (c,),
        t + "embeddings.patch_embedding.weight": (c, 3, 14, 14),
        t + "embeddings.position_embedding.weight": (577, c),
        t + "pre_layrnorm.weight": (c,),
        t + "pre_layrnorm.bias": (c,),
        t + "post_layernorm.weight": (c,),
        t + "post_layernorm.bias": (c,),
    }
    for j in range(vis["num_hidden_layers"]):
        p = f"{t}encoder.layers.{j}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys |= {p + f"self_attn.{proj}.weight": (c, c), p + f"self_attn.{proj}.bias": (c,)}
        for norm in ("layer_norm1", "layer_norm2"):
            keys |= {p + f"{norm}.weight": (c,), p + f"{norm}.bias": (c,)}
        keys |= {
            p + "mlp.fc1.weight": (ci, c),
            p + "mlp.fc1.bias": (ci,),
            p + "mlp.fc2.weight": (c, ci),
            p + "mlp.fc2.bias": (c,),
        }
    return keys


def random_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in spec_keys().items()}


def load(folder: Path, **kwargs):  # -> Phi3VEmbeddingModel
    return load_model(folder, vision_config=TINY_VISION, **kwargs)


def test_the_spec_key_list_is_the_layout_vlm2vec_wrote() -> None:
    stored = {k: tuple(v.shape) for k, v in parity_tensors().items()}
    assert stored == spec_keys()


def test_a_checkpoint_with_the_real_key_names_fills_every_parameter(tmp_path: Path) -> None:
    tensors = random_tensors()
    model = load(write_checkpoint(tmp_path / "ckpt", tensors))
    params = dict(model.named_parameters())
    used = {checkpoint_key(name) for name in params}
    assert used == set(tensors) - {"lm_head.weight"}  # the LM head is read-skipped
    for name, param in params.items():
        assert torch.equal(param, tensors[checkpoint_key(name)]), name


def test_a_sharded_checkpoint_loads_like_a_single_file(tmp_path: Path) -> None:
    tensors = parity_tensors()
    one = load(write_checkpoint(tmp_path / "one", tensors))
    three = load(write_checkpoint(tmp_path / "three", tensors, shards=3))
    for (name, a), (_, b) in zip(one.named_parameters(), three.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_bfloat16_loading_casts_every_parameter(tmp_path: Path) -> None:
    model = load(write_checkpoint(tmp_path / "ckpt", parity_tensors()), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.language_model.rotary_emb.inv_freq.dtype == torch.float32


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("rename", ["model.norm.weight", "model.final_norm.weight"]),
        ("drop", ["model.vision_embed_tokens.sub_GN"]),
        ("extra", ["model.layers.0.self_attn.rotary.scale"]),
        ("shape", ["model.vision_embed_tokens.img_projection.0.weight"]),
    ],
)
def test_a_checkpoint_off_the_layout_fails_in_one_line(
    tmp_path: Path, change: str, named: list[str]
) -> None:
    tensors = random_tensors()
    if change == "rename":
        tensors[named[1]] = tensors.pop(named[0])
    elif change == "drop":
        del tensors[named[0]]
    elif change == "extra":
        tensors[named[0]] = torch.ones(3)
    else:
        tensors[named[0]] = torch.zeros(64, 100)
    with pytest.raises(ModelError) as err:
        load(write_checkpoint(tmp_path / "ckpt", tensors))
    message = str(err.value)
    assert "\n" not in message
    assert all(name in message for name in named)


def test_the_shared_embedding_may_be_stored_under_its_image_embedding_name(tmp_path: Path) -> None:
    tensors = parity_tensors()
    tensors["model.vision_embed_tokens.wte.weight"] = tensors.pop("model.embed_tokens.weight")
    model = load(write_checkpoint(tmp_path / "ckpt", tensors))
    embedding = model.language_model.embed_tokens.weight
    assert torch.equal(embedding, tensors["model.vision_embed_tokens.wte.weight"])


def test_a_folder_with_only_pickled_weights_is_refused(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", parity_tensors())
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="only pytorch_model"):
        load(folder)


# ---- LoRA / DoRA -------------------------------------------------------------------------

@pytest.mark.parametrize("use_dora", [True, False])
def test_base_plus_adapter_equals_peft_merged_model(tmp_path: Path, use_dora: bool) -> None:
    merged = make_adapter(tmp_path / "adapter", use_dora=use_dora)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        saved = list(f.keys())
    assert any(k.endswith("lora_magnitude_vector") for k in saved) == use_dora
    assert any(".img_processor.vision_model.encoder." in k for k in saved)

    ours = load(PARITY, adapter=tmp_path / "adapter")
    reference = load(write_checkpoint(tmp_path / "merged", merged))
    base = load(PARITY)
    changed = 0
    for (name, a), (_, b), (_, c) in zip(
        ours.named_parameters(), reference.named_parameters(), base.named_parameters(),
        strict=True,
    ):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
        changed += not torch.equal(a, c)
    assert changed == 2 * 4 + 2 * 4  # 4 LM + 4 CLIP linear layers in each of 2 layers

    processor = Phi3VProcessor.from_pretrained(PARITY)
    items = [parity_items()[i] for i in (0, 5)]
    prepared = [processor(item["text_model"], item_image(item)) for item in items]
    got, want = encode(ours, processor, prepared), encode(reference, processor, prepared)
    assert float(np.abs(got - want).max()) <= 1e-5
    assert float(np.abs(got - encode(base, processor, prepared)).max()) > 1e-3


def test_an_adapter_bin_is_read_with_weights_only(tmp_path: Path) -> None:
    make_adapter(tmp_path / "st", use_dora=True)
    tensors = safetensors_torch.load_file(str(tmp_path / "st" / "adapter_model.safetensors"))
    (tmp_path / "bin").mkdir()
    shutil.copy(tmp_path / "st" / "adapter_config.json", tmp_path / "bin")
    torch.save(tensors, tmp_path / "bin" / "adapter_model.bin")
    from_bin = load(PARITY, adapter=tmp_path / "bin")
    from_st = load(PARITY, adapter=tmp_path / "st")
    for (name, a), (_, b) in zip(from_bin.named_parameters(), from_st.named_parameters(),
                                 strict=True):
        assert torch.equal(a, b), name


class _Payload:
    """An object whose unpickling would run code: weights_only must refuse it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("unpickled",))


@pytest.mark.parametrize("payload", ["object", "strings"])
def test_a_pickled_adapter_with_a_non_tensor_payload_is_refused(
    tmp_path: Path, payload: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make_adapter(tmp_path / "st", use_dora=True)
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(tmp_path / "st" / "adapter_config.json", folder)
    tensors = safetensors_torch.load_file(str(tmp_path / "st" / "adapter_model.safetensors"))
    first = next(iter(tensors))
    content = {first: _Payload()} if payload == "object" else {**tensors, "note": "hello"}
    torch.save(content, folder / "adapter_model.bin")
    with pytest.raises(ModelError) as err:
        load(PARITY, adapter=folder)
    assert "\n" not in str(err.value)
    assert "adapter_model.bin" in str(err.value)
    assert "unpickled" not in capsys.readouterr().out


def test_an_adapter_for_other_weights_fails_in_one_line(tmp_path: Path) -> None:
    make_adapter(tmp_path / "adapter", use_dora=False)
    file = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = safetensors_torch.load_file(str(file))
    renamed = {k.replace("qkv_proj", "qkv"): v for k, v in tensors.items()}
    safetensors_torch.save_file(renamed, str(file))
    with pytest.raises(ModelError) as err:
        load(PARITY, adapter=tmp_path / "adapter")
    assert "\n" not in str(err.value)
    assert "self_attn.qkv.weight" in str(err.value)
