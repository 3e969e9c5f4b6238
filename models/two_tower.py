"""What the two-tower adapters (CLIP, OpenCLIP, SigLIP, BLIP, BLIP-2) have in common.

A subclass loads its checkpoint and encodes a batch of images and a batch of texts;
:class:`TwoTowerEncoder` does the rest: the instruction policy, batching,
``torch.inference_mode`` and fusion of image+text items. The options shared by every adapter
(checkpoint, device, dtype, batch size, loading errors, ``config``) come from
:class:`~.base.AdapterBase`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mmeb.errors import ModelError
from mmeb.items import Item, Side

from .base import AdapterBase, batches
from .fusion import Fusion, assemble, parse_fusion, parts_used

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

    from mmeb.tasks import TaskSpec

T = TypeVar("T")


class InstructionPolicy(str, Enum):
    """What a two-tower model reads from an MMEB string besides the image."""

    NONE = "none"  # the text without MMEB's instruction (the paper's setting)
    PREPEND = "prepend"  # instruction + " " + text

    def __str__(self) -> str:
        return self.value


def parse_instruction_policy(value: str | InstructionPolicy | None) -> InstructionPolicy:
    # ``--model-arg instruction=none`` arrives as None: the registry converts "none" to None.
    if value is None:
        return InstructionPolicy.NONE
    try:
        return InstructionPolicy(value)
    except ValueError:
        names = ", ".join(policy.value for policy in InstructionPolicy)
        raise ModelError(f"unknown instruction policy {value!r}; choose one of: {names}") from None


def model_text(item: Item, policy: InstructionPolicy) -> str:
    """The text a two-tower model encodes for ``item`` (may be empty)."""
    if policy is InstructionPolicy.PREPEND and item.instruction:
        return f"{item.instruction} {item.text}" if item.text else item.instruction
    return item.text


def _rgb(item: Item) -> PILImage.Image:
    image = item.image
    if image is None:  # callers only pass items with an image
        raise ModelError(f"{item.origin or 'item'} has no image")
    return image



class TwoTowerEncoder(AdapterBase):
    """An :class:`~mmeb.encoder.Encoder` over a model with one image and one text tower.

    Subclasses set the class attributes and implement :meth:`_load`, :meth:`_encode_images`
    and :meth:`_encode_texts`; the constructor's keyword arguments add the ``--model-arg`` keys
    ``fusion`` and ``instruction`` to the options of :class:`~.base.AdapterBase`.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        fusion: str | None = None,
        instruction: str | None = None,
        **options: Any,
    ) -> None:
        self.fusion: Fusion = parse_fusion(fusion)
        self.instruction: InstructionPolicy = parse_instruction_policy(instruction)
        self._dim: int | None = None
        super().__init__(checkpoint, **options)

    # -- what a subclass provides -------------------------------------------------------

    @abstractmethod
    def _encode_images(self, images: list[PILImage.Image]) -> torch.Tensor:
        """One batched forward: RGB images -> ``(n, d)`` features."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """One batched forward: texts -> ``(n, d)`` features (truncated to the model's limit)."""

    def _policy_config(self) -> dict[str, Any]:
        return {"fusion": self.fusion.value, "instruction": self.instruction.value}

    # -- the Encoder protocol ------------------------------------------------------------

    def encode(
        self,
        items: Sequence[Item],
        *,
        side: Side,  # noqa: ARG002 (the protocol's signature; see the docstring)
        task: TaskSpec | None = None,  # noqa: ARG002
    ) -> np.ndarray:
        """Encode ``items`` to a float32 ``(n, d)`` array (``side`` and ``task`` do not change
        a two-tower model's vectors: the instruction policy is the same for every task)."""
        import torch

        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [model_text(item, self.instruction) for item in items]
        plan = [
            parts_used(self.fusion, has_image=item.has_image, has_text=bool(text))
            for item, text in zip(items, texts, strict=True)
        ]
        image_rows = [row for row, (image, _) in enumerate(plan) if image]
        text_rows = [row for row, (_, text) in enumerate(plan) if text]
        with torch.inference_mode():
            # Images are read per batch, so a task never holds all its images in memory.
            image_vectors = self._batched(
                lambda chunk: self._encode_images([_rgb(item) for item in chunk]),
                [items[row] for row in image_rows],
            )
            text_vectors = self._batched(self._encode_texts, [texts[row] for row in text_rows])
        return assemble(self.fusion, len(items), image_rows, image_vectors, text_rows, text_vectors)

    @property
    def dim(self) -> int:
        """Size of the output vectors."""
        if self._dim is None:
            import torch

            with torch.inference_mode():
                self._dim = int(self._encode_texts([""]).shape[1])
        return self._dim

    def _batched(self, encode: Callable[[list[T]], torch.Tensor], values: list[T]) -> np.ndarray:
        chunks = [
            encode(list(chunk)).float().cpu().numpy() for chunk in batches(values, self.batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
