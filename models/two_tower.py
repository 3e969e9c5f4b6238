"""What the two-tower adapters (CLIP, OpenCLIP, SigLIP, BLIP, BLIP-2) have in common.

A subclass loads its checkpoint and encodes a batch of images and a batch of texts;
:class:`TwoTowerEncoder` does the rest: the instruction policy, batching,
``torch.inference_mode`` and fusion of image+text items. The options shared by every adapter
(checkpoint, device, dtype, batch size, loading errors, ``config``) come from
:class:`~.base.AdapterBase`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from mmeb.errors import ModelError
from mmeb.items import Item, Side

from .base import AdapterBase, batches
from .fusion import Fusion, assemble, parse_fusion, parts_used

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

    from mmeb.tasks import TaskSpec

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
    def _encode_images(self, images: Any) -> torch.Tensor:
        """One batched forward: RGB images (or what :meth:`_image_inputs` made of them) ->
        ``(n, d)`` features."""

    @abstractmethod
    def _encode_texts(self, texts: Any) -> torch.Tensor:
        """One batched forward: texts (or what :meth:`_text_inputs` made of them) -> ``(n, d)``
        features (truncated to the model's limit)."""

    def _policy_config(self) -> dict[str, Any]:
        return {"fusion": self.fusion.value, "instruction": self.instruction.value}

    # -- the Encoder protocol ------------------------------------------------------------

    def encode(
        self,
        items: Sequence[Item],
        *,
        side: Side,
        task: TaskSpec | None = None,
    ) -> np.ndarray:
        """Encode ``items`` to a float32 ``(n, d)`` array (``side`` and ``task`` do not change
        a two-tower model's vectors: the instruction policy is the same for every task)."""
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_prepared(self._preprocess(items, side=side, task=task))

    def _preprocess(
        self,
        items: Sequence[Item],
        *,
        side: Side,  # noqa: ARG002 (the same for every side and task, as in encode)
        task: TaskSpec | None,  # noqa: ARG002
    ) -> dict[str, Any]:
        """Which tower reads what, and each tower's batches of inputs (images read here)."""
        texts = [model_text(item, self.instruction) for item in items]
        plan = [
            parts_used(self.fusion, has_image=item.has_image, has_text=bool(text))
            for item, text in zip(items, texts, strict=True)
        ]
        image_rows = [row for row, (image, _) in enumerate(plan) if image]
        text_rows = [row for row, (_, text) in enumerate(plan) if text]
        with_image = [items[row] for row in image_rows]
        return {
            "count": len(items),
            "image_rows": image_rows,
            "text_rows": text_rows,
            "images": [self._image_inputs([_rgb(item) for item in chunk])
                       for chunk in batches(with_image, self.batch_size)],
            "texts": [self._text_inputs(list(chunk))
                      for chunk in batches([texts[row] for row in text_rows], self.batch_size)],
        }

    def encode_prepared(self, prepared: dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            image_vectors = self._stacked([self._encode_images(x) for x in prepared["images"]])
            text_vectors = self._stacked([self._encode_texts(x) for x in prepared["texts"]])
        return assemble(self.fusion, prepared["count"], prepared["image_rows"], image_vectors,
                        prepared["text_rows"], text_vectors)

    def _image_inputs(self, images: list[PILImage.Image]) -> Any:
        """What :meth:`_encode_images` is given for a batch of images; a subclass that can
        turn them into pixel tensors without its model does it here (see :mod:`.hf`)."""
        return images

    def _text_inputs(self, texts: list[str]) -> Any:
        """What :meth:`_encode_texts` is given for a batch of texts (e.g. token ids)."""
        return texts

    @property
    def dim(self) -> int:
        """Size of the output vectors."""
        if self._dim is None:
            import torch

            with torch.inference_mode():
                self._dim = int(self._encode_texts([""]).shape[1])
        return self._dim

    @staticmethod
    def _stacked(chunks: list[torch.Tensor]) -> np.ndarray:
        if not chunks:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([chunk.float().cpu().numpy() for chunk in chunks])
