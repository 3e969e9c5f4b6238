"""Tiny vision-language checkpoints for offline VLM adapter tests.

The VLM2Vec parity folders (``tests/data/parity/<backbone>``) are real-format checkpoints with
reference embeddings from VLM2Vec's own code. The builders here derive what those folders do not
cover: an E5-V-shaped LLaVA-NeXT (Llama language model, no ``processor_config.json``, Llama-3
chat tokens, no pad token) and LoRA (DoRA) adapters over the Qwen2-VL folder, saved the way the
released VLM2Vec adapters are (transformers 4.x module names, ``adapter_model.bin``), together
with the merged model they must equal.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmeb.items import Item

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

PARITY = Path(__file__).parent / "data" / "parity"
QWEN2VL = PARITY / "qwen2_vl"
LLAVA_NEXT = PARITY / "llava_next"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
E5V_TILE = 56  # the tiny vision tower's image size: 4x4 patches of 14 pixels per tile
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "preprocessor_config.json",
                   "chat_template.json", "chat_template.jinja")


def parity_items(folder: Path) -> list[Item]:
    """The folder's ``inputs.json`` items as mmeb items (raw MMEB string + image file)."""
    records = json.loads((folder / "inputs.json").read_text())["items"]
    return [
        Item(raw=r["text_mmeb"], text="", image_path=str(folder / r["image"]) if r["image"]
             else None, origin=f"{folder.name} item {r['index']}")
        for r in records
    ]


def save_e5v(directory: Path) -> Path:
    """A tiny LLaVA-NeXT with E5-V's layout: Llama text model, CLIP tower, anyres pinpoints,
    tokenizer with ``<image>`` and the Llama-3 chat tokens, no processor_config.json."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tokenizer = tf.AutoTokenizer.from_pretrained(LLAVA_NEXT)
    tokenizer.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
    tokenizer.bos_token = "<|begin_of_text|>"
    tokenizer.eos_token = "<|eot_id|>"
    tokenizer.pad_token = None
    pinpoints = [[E5V_TILE, 2 * E5V_TILE], [2 * E5V_TILE, E5V_TILE], [2 * E5V_TILE, 2 * E5V_TILE]]
    config = tf.LlavaNextConfig(
        text_config=dict(model_type="llama", hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=len(tokenizer), rms_norm_eps=1e-5, rope_theta=500000.0,
                         max_position_embeddings=4096),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, image_size=E5V_TILE,
                           patch_size=14, projection_dim=32),
        image_grid_pinpoints=pinpoints,
        image_token_id=int(tokenizer.convert_tokens_to_ids("<image>")),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = tf.LlavaNextForConditionalGeneration(config)
    with torch.no_grad():  # a wider spread than the default init, so inputs differ clearly
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    image_processor = tf.LlavaNextImageProcessorPil(
        size={"shortest_edge": E5V_TILE}, crop_size={"height": E5V_TILE, "width": E5V_TILE},
        image_grid_pinpoints=pinpoints,
    )
    image_processor.save_pretrained(directory)
    (directory / "processor_config.json").unlink(missing_ok=True)
    return directory


def copy_preprocessing(source: Path, target: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)


def to_legacy_layout(key: str) -> str:
    """A transformers-5 Qwen2-VL adapter key in the 4.x module layout the released adapters use."""
    inner = key.removeprefix("base_model.model.")
    inner = inner.replace("model.language_model.", "model.", 1)
    inner = inner.replace("model.visual.", "visual.", 1)
    return "base_model.model." + inner


def save_qwen2vl_lora(directory: Path, *, legacy: bool) -> tuple[Path, Path]:
    """A DoRA adapter over the Qwen2-VL parity checkpoint and the merged model it defines.

    ``legacy`` saves it as the released VLM2Vec adapters are: 4.x module names in a
    tensors-only ``adapter_model.bin``; otherwise PEFT's own safetensors file.
    """
    import torch
    import transformers as tf
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    torch.manual_seed(1)
    model = tf.Qwen2VLForConditionalGeneration.from_pretrained(QWEN2VL, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, use_dora=True,
                        init_lora_weights="gaussian",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # B starts at zero; make the adapter change the model
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.3)
            elif "lora_magnitude" in name:
                parameter.mul_(1.0 + 0.2 * torch.rand_like(parameter))
    adapter = directory / "adapter"
    peft_model.save_pretrained(adapter)
    if legacy:
        weights = adapter / "adapter_model.safetensors"
        state = {to_legacy_layout(k): v for k, v in load_file(weights).items()}
        torch.save(state, adapter / "adapter_model.bin")
        weights.unlink()
    copy_preprocessing(QWEN2VL, adapter)
    merged = directory / "merged"
    peft_model.merge_and_unload().save_pretrained(merged)
    copy_preprocessing(QWEN2VL, merged)
    return adapter, merged


_built: dict[str, Path] = {}


def e5v_checkpoint(factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    if "e5v" not in _built:
        _built["e5v"] = save_e5v(factory.mktemp("tiny-e5v"))
    return _built["e5v"]
