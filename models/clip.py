"""OpenAI CLIP through transformers' ``CLIPModel`` (the paper's "CLIP" baseline)."""

from __future__ import annotations

from .hf import HFTwoTowerEncoder


class CLIPEncoder(HFTwoTowerEncoder):
    """Projected ``get_image_features`` / ``get_text_features`` of a CLIP checkpoint; texts are
    cut at the text tower's 77 tokens."""

    family = "clip"
    model_class = "CLIPModel"
