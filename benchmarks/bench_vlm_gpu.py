"""VLM adapters at real size on one GPU: items/s, peak memory, bf16 vs fp32 agreement.

Each architecture is built from its published configuration with random weights (nothing is
downloaded) and run through the adapter's own encode path: the tokenizer and image processor
come from the parity folders in ``tests/data/parity`` (same image geometry and token ids as the
real processors, small vocabulary), the model is the real-size one. Inputs are MMEB-shaped
image+text queries at ``image_resolution=high`` (1344x1344), the setting of the paper.

    python benchmarks/bench_vlm_gpu.py                 # all four, needs a CUDA device
    python benchmarks/bench_vlm_gpu.py --tiny --device cpu   # the same code on the tiny configs
    python benchmarks/bench_vlm_gpu.py --device cpu --layers 1 --resolution low   # real widths

Prints one JSON line per model: items/s at the memory-aware default batch size, peak memory,
and the smallest cosine between bf16 and fp32 vectors of the same items.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "tests" / "data" / "parity"

QWEN2VL_ROPE = {"type": "mrope", "rope_type": "default", "mrope_section": [16, 24, 24],
                "rope_theta": 1e6}
QWEN2VL_VISION = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
CLIP_L336 = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                 num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                 projection_dim=768, hidden_act="quick_gelu")
# name -> (parity folder, text config, vision config) from the architecture specs.
MODELS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "vlm2vec-qwen2vl-2b": ("qwen2_vl", dict(
        hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, vocab_size=151936, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters=dict(QWEN2VL_ROPE)),
        dict(QWEN2VL_VISION, hidden_size=1536)),
    "vlm2vec-qwen2vl-7b": ("qwen2_vl", dict(
        hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        intermediate_size=18944, vocab_size=152064, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters=dict(QWEN2VL_ROPE)),
        dict(QWEN2VL_VISION, hidden_size=3584)),
    "vlm2vec-llava-next": ("llava_next", dict(
        model_type="mistral", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, intermediate_size=14336, vocab_size=32064, rms_norm_eps=1e-5,
        sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
        CLIP_L336),
    "e5-v": ("llava_next", dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, intermediate_size=14336, vocab_size=128320, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), CLIP_L336),
}
QUESTION = "<|image_1|>\nRepresent the given image with the following question: What is in it?\n"


def real_size_model(
    name: str, template: Any, dtype: Any, device: str, layers: int | None = None
) -> Any:
    """The template model's class and special ids with the real sizes, random weights
    (``layers``: fewer layers in each tower, for a quick check of the configuration)."""
    import torch
    import transformers as tf

    _, text, vision = MODELS[name]
    if layers is not None:
        text = {**text, "num_hidden_layers": layers}
        vision = {**vision, "depth" if "depth" in vision else "num_hidden_layers": layers}
    config = template.config.to_dict()
    # Fresh sub-configs (derived fields such as layer_types follow the new sizes); the special
    # token ids and model types stay those of the template, which its processor matches.
    old_text, old_vision = config["text_config"], config["vision_config"]
    text = {**text}
    config["tie_word_embeddings"] = text.pop("tie_word_embeddings", False)
    keep = ("bos_token_id", "eos_token_id", "pad_token_id", "model_type")
    config["text_config"] = {**{k: old_text[k] for k in keep if k in old_text}, **text}
    config["vision_config"] = {"model_type": old_vision["model_type"], **vision}
    config = type(template.config).from_dict(config)
    with torch.device(device):
        model = getattr(tf, type(template).__name__)._from_config(config, dtype=dtype)
    return model.eval()


def items(count: int) -> list[Any]:
    from PIL import Image

    from mmeb.items import Item

    out = []
    for i in range(count):
        image = Image.new("RGB", (640, 480), (40 * (i % 6), 90, 200 - 20 * (i % 9)))
        out.append(Item(raw=QUESTION, text="What is in it?", pil_image=image))
    return out


def bench(
    name: str, *, device: str, tiny: bool, batches: int, layers: int | None, resolution: str
) -> dict[str, Any]:
    import numpy as np
    import torch

    from mmeb.items import Side
    from mmeb.registry import load_model

    folder = PARITY / MODELS[name][0]
    encoder: Any = load_model(name, checkpoint=str(folder), device=device, dtype="bfloat16",
                              model_args={"image_resolution": resolution})
    if not tiny:
        encoder.model = real_size_model(name, encoder.model, torch.bfloat16, device, layers)
        encoder.batch_size = encoder._auto_batch_size()
    batch = encoder.batch_size
    inputs = items(batch * batches)
    encoder.encode(inputs[:batch], side=Side.QUERY)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    low = encoder.encode(inputs, side=Side.QUERY)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    # fp32 on the same weights and inputs: how much bf16 moves the vectors.
    encoder.model = encoder.model.float()
    encoder.dtype = "float32"
    few = inputs[: min(len(inputs), 4)]
    high = encoder.encode(few, side=Side.QUERY)
    cosine = float(np.min(np.sum(low[: len(few)] * high, axis=1)))
    size = "tiny" if tiny else "real" if layers is None else f"real width, {layers} layers"
    return {"model": name, "size": size, "device": device, "resolution": resolution,
            "batch_size": batch, "items": len(inputs), "items_per_s": len(inputs) / seconds,
            "peak_memory_gib": peak, "bf16_vs_fp32_min_cosine": cosine}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the parity configs, not real sizes")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--layers", type=int, default=None,
                        help="layers per tower at real width (default: the real depth)")
    parser.add_argument("--resolution", default="high")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for name in args.models.split(","):
        result = bench(name, device=args.device, tiny=args.tiny, batches=args.batches,
                       layers=args.layers, resolution=args.resolution)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
