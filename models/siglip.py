"""SigLIP through transformers' ``SiglipModel`` (the paper's "SigLIP" baseline)."""

from __future__ import annotations

from .hf import HFTwoTowerEncoder


class SigLIPEncoder(HFTwoTowerEncoder):
    """Projected image and text features of a SigLIP checkpoint.

    SigLIP's text tower pools the last position and was trained on texts padded to the full
    length without an attention mask, so texts are fed exactly that way.
    """

    family = "siglip"
    model_class = "SiglipModel"
    text_padding = "max_length"
    text_attention_mask = False
