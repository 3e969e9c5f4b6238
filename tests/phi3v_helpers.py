"""Shared pieces of the Phi-3.5-V tests: the parity folder, its items, pooling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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


def last_token_embeddings(hidden: Any, attention_mask: Any) -> np.ndarray:
    """The L2-normalised state of each row's last position whose mask is 1 (either padding)."""
    import torch

    length = attention_mask.shape[1]
    last = length - 1 - attention_mask.flip(1).argmax(1)
    picked = hidden[torch.arange(hidden.shape[0]), last].float()
    return torch.nn.functional.normalize(picked, dim=-1).numpy()


def encode(
    model: Any, processor: Any, prepared: list[dict[str, Any]], side: str = "right"
) -> np.ndarray:
    import torch

    batch = processor.collate(prepared, padding_side=side)
    with torch.inference_mode():
        hidden = model(**batch)
    return last_token_embeddings(hidden, batch["attention_mask"])
