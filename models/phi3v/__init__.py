"""Phi-3.5-V (Phi-3 language model + CLIP ViT-L/14-336 with the HD image transform).

``config`` (reads ``config.json``), ``processing`` (the processor, no torchvision) and
``weights`` (loading the checkpoints as they are, LoRA merge) import torch only inside
functions; ``modeling`` defines the ``nn.Module`` classes and imports torch when imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .modeling import Phi3VEmbeddingModel
    from .processing import Phi3VProcessor


def load(
    checkpoint: str | Path,
    *,
    adapter: str | Path | None = None,
    vision_config: str | Path | None = None,
    num_crops: int = 4,
    max_length: int | None = None,
    device: str = "cpu",
    dtype: Any = "float32",
    attn_implementation: str = "sdpa",
) -> tuple[Phi3VEmbeddingModel, Phi3VProcessor]:
    """Model and processor of a local Phi-3.5-V checkpoint folder.

    ``adapter`` is a LoRA adapter folder merged into ``checkpoint`` (its base); the processor
    comes from ``checkpoint``, as the original evaluation takes the base model's processor.
    """
    from .processing import Phi3VProcessor
    from .weights import load_model

    processor = Phi3VProcessor.from_pretrained(
        checkpoint, num_crops=num_crops, max_length=max_length
    )
    model = load_model(
        checkpoint,
        vision_config=vision_config,
        adapter=adapter,
        device=device,
        dtype=dtype,
        attn_implementation=attn_implementation,
    )
    return model, processor
