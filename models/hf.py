"""The part of the two-tower adapters that is specific to transformers checkpoints.

Loading goes through the public ``from_pretrained`` path, so a Hub id and a local directory
behave the same way and ``HF_HUB_OFFLINE`` is honoured by the library itself. The tokenizer and
the image processor are loaded on their own (not through the model's ``*Processor``): the
adapters need nothing else, and some processors add tokens for a language model (BLIP-2) or
need optional packages that a pure retrieval model does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mmeb.errors import ModelError

from .two_tower import TwoTowerEncoder

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

# Anything above this is a tokenizer's "no limit" sentinel (int(1e30)), not a real limit.
_NO_LIMIT = 1_000_000


def load_pretrained(
    class_name: str | type, checkpoint: str, dtype: torch.dtype, device: str, **kwargs: Any
) -> Any:
    """``transformers.<class_name>.from_pretrained`` (or that of a model class given itself) in
    eval mode on ``device``; ``kwargs`` go to ``from_pretrained``.

    Weights the checkpoint lacks would be initialised at random and give plausible-looking
    but meaningless vectors (e.g. a BLIP captioning checkpoint has no retrieval projections),
    so any missing weight is an error.
    """
    import transformers

    model_class: Any = (
        getattr(transformers, class_name) if isinstance(class_name, str) else class_name
    )
    class_name = model_class.__name__
    # transformers 5 renamed torch_dtype to dtype.
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model, info = model_class.from_pretrained(
        checkpoint, output_loading_info=True, **{dtype_key: dtype}, **kwargs
    )
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:3])
        raise ModelError(
            f"checkpoint {checkpoint} lacks {len(missing)} weights of {class_name} ({shown}"
            f"{', ...' if len(missing) > 3 else ''}); pass a checkpoint of that architecture"
        )
    return model.to(device).eval()


def load_preprocessing(checkpoint: str) -> tuple[Any, Any]:
    """The checkpoint's tokenizer and image processor."""
    from transformers import AutoImageProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint), AutoImageProcessor.from_pretrained(checkpoint)


def text_token_limit(tokenizer: Any, max_positions: int | None) -> int | None:
    """The longest token sequence the text tower accepts (CLIP: 77). MMEB texts can be far
    longer, so every text is truncated to this."""
    limits = [
        n
        for n in (getattr(tokenizer, "model_max_length", None), max_positions)
        if isinstance(n, int) and 0 < n < _NO_LIMIT
    ]
    return min(limits) if limits else None


def as_tensor(output: Any) -> torch.Tensor:
    """``get_*_features`` return a tensor in transformers 4 and a ModelOutput in 5."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    return pooled if pooled is not None else output[0]


@dataclass
class PreparedPixels:
    """A batch's pixel values on the CPU, made without the model (in a worker, say)."""

    values: torch.Tensor


@dataclass
class PreparedTokens:
    """A batch's token tensors on the CPU, made without the model."""

    values: dict[str, torch.Tensor]


class HFTwoTowerEncoder(TwoTowerEncoder):
    """A transformers model with ``get_image_features`` / ``get_text_features``.

    Subclasses whose features come from elsewhere override :meth:`_encode_images` and
    :meth:`_encode_texts`, using :meth:`_pixels` and :meth:`_tokens` for the inputs.
    """

    required_modules: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    model_class: ClassVar[str]  # transformers class the checkpoint is loaded with
    text_padding: ClassVar[str] = "longest"
    # Whether the text tower sees an attention mask; SigLIP was trained without one.
    text_attention_mask: ClassVar[bool] = True

    model: Any
    tokenizer: Any
    image_processor: Any
    max_text_tokens: int | None

    def _load(self) -> None:
        self.model = load_pretrained(
            self.model_class, self.checkpoint, self._torch_dtype(), self.device
        )
        self.tokenizer, self.image_processor = load_preprocessing(self.checkpoint)
        self.max_text_tokens = text_token_limit(self.tokenizer, self._max_positions())
        if self.text_padding == "max_length" and self.max_text_tokens is None:
            raise ModelError(f"checkpoint {self.checkpoint} sets no maximum text length")

    def _max_positions(self) -> int | None:
        return getattr(self.model.config.text_config, "max_position_embeddings", None)

    def _image_inputs(self, images: list[PILImage.Image]) -> PreparedPixels:
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return PreparedPixels(pixels)

    def _text_inputs(self, texts: list[str]) -> PreparedTokens:
        batch = self.tokenizer(
            texts,
            padding=self.text_padding,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        names = ("input_ids", "attention_mask") if self.text_attention_mask else ("input_ids",)
        return PreparedTokens({name: batch[name] for name in names})

    def _pixels(self, images: list[PILImage.Image] | PreparedPixels) -> torch.Tensor:
        """Pixel values on the device, from images or from :meth:`_image_inputs`."""
        if not isinstance(images, PreparedPixels):
            images = self._image_inputs(images)
        return images.values.to(self.device, self._torch_dtype())

    def _tokens(self, texts: list[str] | PreparedTokens) -> dict[str, torch.Tensor]:
        """Token tensors on the device, from texts or from :meth:`_text_inputs`."""
        if not isinstance(texts, PreparedTokens):
            texts = self._text_inputs(texts)
        return {name: value.to(self.device) for name, value in texts.values.items()}

    def _encode_images(self, images: list[PILImage.Image] | PreparedPixels) -> torch.Tensor:
        return as_tensor(self.model.get_image_features(pixel_values=self._pixels(images)))

    def _encode_texts(self, texts: list[str] | PreparedTokens) -> torch.Tensor:
        return as_tensor(self.model.get_text_features(**self._tokens(texts)))

    def _model_config(self) -> dict[str, Any]:
        return {
            "model_class": type(self.model).__name__,
            "image_processor": type(self.image_processor).__name__,
            "tokenizer": type(self.tokenizer).__name__,
            "max_text_tokens": self.max_text_tokens,
            "text_padding": self.text_padding,
        }
