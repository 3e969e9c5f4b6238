"""Phi-3.5-V input processing: the HD image transform and the ``<|image_1|>`` token layout.

Reproduces the original processor with PIL and torch alone (no torchvision, no remote code):

* HD transform: a portrait image is transposed, resized (PIL bilinear) so that its width is
  ``scale * 336`` for the largest ``scale`` with ``scale * ceil(scale / ratio) <= num_crops``,
  its height padded with white to a multiple of 336, and transposed back. The normalised HD
  image is cut into 336x336 crops (row-major) after a bicubic 336x336 global view, and zero
  crops fill the ``num_crops + 1`` slots.
* Text: the prompt is split around ``<|image_1|>``; each chunk is tokenized on its own, so each
  starts with its own ``<s>``, and the tag becomes ``num_image_tokens`` copies of ``-1``.
  Without an image the text goes through the tokenizer whole, as in the original.

Module level imports stay light; torch, numpy and PIL are imported where they are used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb.errors import ModelError

from .config import CROP_SIZE, TOKENS_PER_CROP

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

# OpenAI CLIP's normalisation, as in Phi-3.5-V's preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_NUM_CROPS = 4  # MMEB's evaluation setting (the original's argument default is 16)
IMAGE_TAG = "<|image_1|>"
_TAG_PATTERN = re.compile(r"<\|image_\d+\|>")
_GRID = math.isqrt(TOKENS_PER_CROP)  # 12 merged tokens per crop row


def hd_scale(width: int, height: int, num_crops: int) -> int:
    """The largest ``scale`` with ``scale * ceil(scale / ratio) <= num_crops`` (ratio >= 1)."""
    if num_crops < 1:
        raise ModelError(f"num_crops must be a positive integer, got {num_crops}")
    ratio = max(width, height) / min(width, height)
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    return scale - 1


def _landscape_resize(width: int, height: int, num_crops: int) -> tuple[int, int]:
    """(new_w, new_h) of the resize, for an image already turned landscape (width >= height)."""
    ratio = width / height
    new_w = int(hd_scale(width, height, num_crops) * CROP_SIZE)
    return new_w, int(new_w / ratio)


def hd_size(width: int, height: int, num_crops: int = DEFAULT_NUM_CROPS) -> tuple[int, int]:
    """(height, width) of the HD image for a ``width`` x ``height`` input; multiples of 336."""
    if width <= 0 or height <= 0:
        raise ModelError(f"an image of size {width}x{height} cannot be processed")
    transposed = width < height
    w, h = (height, width) if transposed else (width, height)
    new_w, new_h = _landscape_resize(w, h, num_crops)
    padded_h = math.ceil(new_h / CROP_SIZE) * CROP_SIZE
    return (new_w, padded_h) if transposed else (padded_h, new_w)


def num_image_tokens(hd_height: int, hd_width: int) -> int:
    """Tokens of one image whose HD size is ``hd_height`` x ``hd_width``.

    (h*w + 1) * 144 + 1 + (h + 1) * 12 with h, w the crop rows and columns: 12 x 12 merged
    tokens per crop plus a separator closing every row of the crop grid, one ``glb_GN``, and
    the global view's 12 rows of 12 + 1.
    """
    h, w = hd_height // CROP_SIZE, hd_width // CROP_SIZE
    return (h * w + 1) * TOKENS_PER_CROP + 1 + (h + 1) * _GRID


def image_token_count(width: int, height: int, num_crops: int = DEFAULT_NUM_CROPS) -> int:
    """Tokens of a ``width`` x ``height`` image with ``num_crops``."""
    return num_image_tokens(*hd_size(width, height, num_crops))


def hd_transform(image: PILImage.Image, num_crops: int = DEFAULT_NUM_CROPS) -> PILImage.Image:
    """Resize and pad an RGB image to the HD size (both sides multiples of 336)."""
    from PIL import Image

    transposed = image.width < image.height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    new_w, new_h = _landscape_resize(image.width, image.height, num_crops)
    # The original resizes a PIL image with torchvision, i.e. PIL's own bilinear filter.
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    target_h = math.ceil(new_h / CROP_SIZE) * CROP_SIZE
    top = int((target_h - new_h) / 2)
    padded = Image.new("RGB", (new_w, target_h), (255, 255, 255))
    padded.paste(resized, (0, top))
    return padded.transpose(Image.Transpose.TRANSPOSE) if transposed else padded


def pixel_values_for(
    image: PILImage.Image,
    num_crops: int = DEFAULT_NUM_CROPS,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """(pixel_values [num_crops + 1, 3, 336, 336] float32, HD (height, width)) of one image."""
    import numpy as np
    import torch

    hd = hd_transform(image.convert("RGB"), num_crops)
    # ToTensor then Normalize, in the same order of operations as torchvision.
    x = torch.from_numpy(np.array(hd, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)
    x = x.sub(torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
    x = x.div(torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))
    _, height, width = x.shape
    rows, cols = height // CROP_SIZE, width // CROP_SIZE
    global_view = torch.nn.functional.interpolate(
        x.unsqueeze(0), size=(CROP_SIZE, CROP_SIZE), mode="bicubic", align_corners=False
    )
    crops = (
        x.reshape(3, rows, CROP_SIZE, cols, CROP_SIZE)
        .permute(1, 3, 0, 2, 4)
        .reshape(rows * cols, 3, CROP_SIZE, CROP_SIZE)
    )
    slots = num_crops + 1
    if rows * cols + 1 > slots:  # cannot happen: scale * ceil(scale / ratio) <= num_crops
        raise ModelError(f"HD transform made {rows * cols} crops for num_crops={num_crops}")
    pad = torch.zeros(slots - 1 - rows * cols, 3, CROP_SIZE, CROP_SIZE, dtype=x.dtype)
    return torch.cat([global_view, crops, pad]), (height, width)


def collate(
    items: Sequence[dict[str, Any]], *, pad_token_id: int, padding_side: str = "right"
) -> dict[str, Any]:
    """Pad per-item processor outputs into one batch.

    ``input_ids`` / ``attention_mask`` become [B, L] (pad id and 0 on ``padding_side``);
    ``pixel_values`` / ``image_sizes`` of the items that have an image are concatenated in item
    order, which is the order the model fills the image positions in (row-major).
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ModelError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not items:
        raise ModelError("collate needs at least one item")
    length = max(int(item["input_ids"].shape[0]) for item in items)
    input_ids = torch.full((len(items), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), length), dtype=torch.long)
    for row, item in enumerate(items):
        n = int(item["input_ids"].shape[0])
        span = slice(0, n) if padding_side == "right" else slice(length - n, length)
        input_ids[row, span] = item["input_ids"]
        attention_mask[row, span] = item["attention_mask"]
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    with_images = [item for item in items if item.get("pixel_values") is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([item["pixel_values"] for item in with_images])
        batch["image_sizes"] = torch.cat([item["image_sizes"] for item in with_images])
    else:
        batch["pixel_values"] = None
        batch["image_sizes"] = None
    return batch


class Phi3VProcessor:
    """Text and image of one item -> the original processor's tensors.

    ``max_length`` truncates text-only inputs only: the original never truncates a prompt
    with an image (its image tokens would be cut).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        num_crops: int = DEFAULT_NUM_CROPS,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        max_length: int | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        if isinstance(num_crops, bool) or not isinstance(num_crops, int) or num_crops < 1:
            raise ModelError(f"num_crops must be a positive integer, got {num_crops!r}")
        self.tokenizer = tokenizer
        self.num_crops = num_crops
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        self.max_length = max_length
        pad = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
        if pad is None:
            raise ModelError("the tokenizer has no pad token; pass pad_token_id")
        self.pad_token_id = int(pad)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        *,
        num_crops: int = DEFAULT_NUM_CROPS,
        max_length: int | None = None,
    ) -> Phi3VProcessor:
        """The tokenizer (``tokenizer.json``, as it is) and normalisation of a checkpoint."""
        import json

        from transformers import PreTrainedTokenizerFast

        folder = Path(checkpoint)
        if not (folder / "tokenizer.json").is_file():
            raise ModelError(
                f"{folder} has no tokenizer.json; pass a Phi-3.5-V checkpoint folder that "
                "ships its tokenizer"
            )
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
        mean, std = CLIP_MEAN, CLIP_STD
        preprocessor = folder / "preprocessor_config.json"
        if preprocessor.is_file():
            settings = json.loads(preprocessor.read_text(encoding="utf-8"))
            mean = settings.get("image_mean", mean)
            std = settings.get("image_std", std)
        pad = tokenizer.pad_token_id
        if pad is None:
            config = folder / "config.json"
            if config.is_file():
                pad = json.loads(config.read_text(encoding="utf-8")).get("pad_token_id")
        return cls(
            tokenizer,
            num_crops=num_crops,
            image_mean=mean,
            image_std=std,
            max_length=max_length,
            pad_token_id=pad,
        )

    def _ids(self, text: str, *, truncate: bool) -> list[int]:
        if truncate and self.max_length is not None:
            encoded = self.tokenizer(text, max_length=self.max_length, truncation=True)
        else:
            encoded = self.tokenizer(text)
        return list(encoded["input_ids"])

    def __call__(self, text: str, image: PILImage.Image | None = None) -> dict[str, Any]:
        """input_ids [L] (image positions = -1), attention_mask [L], and for an image
        pixel_values [1, num_crops + 1, 3, 336, 336] and image_sizes [1, 2] (HD height, width).
        """
        import torch

        if image is None:
            ids = self._ids(text, truncate=True)
            return {
                "input_ids": torch.tensor(ids, dtype=torch.long),
                "attention_mask": torch.ones(len(ids), dtype=torch.long),
                "pixel_values": None,
                "image_sizes": None,
            }
        tags = _TAG_PATTERN.findall(text)
        if tags != [IMAGE_TAG]:
            raise ModelError(
                f"a Phi-3.5-V prompt with one image must contain {IMAGE_TAG} exactly once; "
                f"found {tags or 'no image tag'} in {text[:60]!r}"
            )
        before, after = _TAG_PATTERN.split(text)
        pixel_values, (height, width) = pixel_values_for(
            image, self.num_crops, self.image_mean, self.image_std
        )
        n_image = num_image_tokens(height, width)
        ids = (
            self._ids(before, truncate=False)
            + [-1] * n_image
            + self._ids(after, truncate=False)
        )
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.ones(len(ids), dtype=torch.long),
            "pixel_values": pixel_values.unsqueeze(0),
            "image_sizes": torch.tensor([[height, width]], dtype=torch.long),
        }

    def collate(
        self, items: Sequence[dict[str, Any]], padding_side: str = "right"
    ) -> dict[str, Any]:
        """:func:`collate` with this tokenizer's pad id."""
        return collate(items, pad_token_id=self.pad_token_id, padding_side=padding_side)
