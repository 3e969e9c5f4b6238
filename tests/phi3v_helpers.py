"""Shared pieces of the Phi-3.5-V tests: the parity folder, its items, encoding, checkpoint
and LoRA adapter writers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    import torch

PARITY = Path(__file__).parent / "data" / "parity" / "phi3_v"
TINY_VISION = PARITY / "tiny_clip_vision_config.json"


def parity_items() -> list[dict[str, Any]]:
    return json.loads((PARITY / "inputs.json").read_text(encoding="utf-8"))["items"]


def item_image(item: dict[str, Any]) -> Any:
    from PIL import Image

    if item["image"] is None:
        return None
    return Image.open(PARITY / item["image"]).convert("RGB")


def expanded_ids(item: dict[str, Any]) -> list[int]:
    return [token for token, run in item["input_ids_rle"] for _ in range(run)]


def encode(
    model: Any, processor: Any, prepared: list[dict[str, Any]], side: str = "right"
) -> np.ndarray:
    import torch

    from mmeb.models.pooling import last_token_pool, normalize

    batch = processor.collate(prepared, padding_side=side)
    with torch.inference_mode():
        hidden = model(**batch)
    return normalize(last_token_pool(hidden, batch["attention_mask"])).numpy()


COPIED = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)


def parity_tensors() -> dict[str, torch.Tensor]:
    from safetensors import torch as safetensors_torch

    return safetensors_torch.load_file(str(PARITY / "model.safetensors"))


def write_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 1) -> Path:
    from safetensors import torch as safetensors_torch

    folder.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy(PARITY / name, folder / name)
    if shards == 1:
        safetensors_torch.save_file(tensors, str(folder / "model.safetensors"))
        return folder
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        safetensors_torch.save_file({k: tensors[k] for k in part}, str(folder / file))
        weight_map |= {k: file for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


# ---- LoRA / DoRA adapters on the parity weights -----------------------------------------

LM_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
CLIP_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def adapted_tree(tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The checkpoint's linear layers that VLM2Vec-LoRA adapts, as a module tree with the
    checkpoint's names: what PEFT sees inside the original model."""
    import torch

    root = torch.nn.Module()
    for key, weight in tensors.items():
        path = key.removesuffix(".weight")
        if not key.endswith(".weight") or path.rsplit(".", 1)[-1] not in LM_TARGETS + CLIP_TARGETS:
            continue
        owner = root
        for part in path.split(".")[:-1]:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        bias = tensors.get(path + ".bias")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        owner.add_module(path.split(".")[-1], linear)
    return root


def make_adapter(folder: Path, *, use_dora: bool, seed: int = 1) -> dict[str, torch.Tensor]:
    """A PEFT adapter on the parity weights with random (non-zero) A, B and magnitudes,
    saved with save_pretrained; returns the weights PEFT's merge_and_unload gives."""
    import torch

    peft = pytest.importorskip("peft")
    base = parity_tensors()
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=list(LM_TARGETS + CLIP_TARGETS),
        use_dora=use_dora,
        init_lora_weights="gaussian",
        lora_dropout=0.0,
    )
    model = peft.get_peft_model(adapted_tree(base), config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                noise = torch.randn(param.shape, generator=gen)
                param.copy_(param + 0.3 * noise if "magnitude" in name else 0.2 * noise)
    model.save_pretrained(str(folder))
    merged = model.merge_and_unload().state_dict()
    return {**base, **{k: v for k, v in merged.items() if k in base}}
