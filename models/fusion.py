"""How a two-tower model turns an image+text input into one vector.

CLIP-family models have no joint encoder: an item with both an image and a text gets one
vector per tower, and a named policy combines them. ``sum`` is what the VLM2Vec paper did
for its CLIP, OpenCLIP, SigLIP and BLIP-2 baselines (raw, unnormalised features added with
equal weights). Items with only one part always get that part's vector, whatever the policy.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from mmeb.errors import ModelError
from mmeb.metrics import l2_normalize


class Fusion(str, Enum):
    SUM = "sum"  # image + text, raw features (the paper's setting)
    SUM_NORMALIZED = "sum_normalized"  # each part L2-normalised, then added
    MEAN = "mean"  # (image + text) / 2, raw features
    IMAGE = "image"  # the image vector alone; the text is not encoded
    TEXT = "text"  # the text vector alone; the image is not encoded

    def __str__(self) -> str:
        return self.value


DEFAULT_FUSION = Fusion.SUM


def parse_fusion(value: str | Fusion | None) -> Fusion:
    """``--model-arg fusion=...`` -> :class:`Fusion`; None means the default."""
    if value is None:
        return DEFAULT_FUSION
    try:
        return Fusion(value)
    except ValueError:
        names = ", ".join(policy.value for policy in Fusion)
        raise ModelError(f"unknown fusion policy {value!r}; choose one of: {names}") from None


def parts_used(policy: Fusion, *, has_image: bool, has_text: bool) -> tuple[bool, bool]:
    """Which towers an item needs: ``(image, text)``.

    An item without an image always uses its text, even an empty one, so that every item
    gets a vector.
    """
    if not has_image:
        return False, True
    if not has_text:
        return True, False
    return policy is not Fusion.TEXT, policy is not Fusion.IMAGE


def combine(policy: Fusion, image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Fuse row-aligned ``(n, d)`` image and text vectors of items that have both parts."""
    if policy is Fusion.SUM:
        return image + text
    if policy is Fusion.SUM_NORMALIZED:
        return l2_normalize(image) + l2_normalize(text)
    if policy is Fusion.MEAN:
        return (image + text) / 2
    return image if policy is Fusion.IMAGE else text


def assemble(
    policy: Fusion,
    n: int,
    image_rows: list[int],
    image_vectors: np.ndarray,
    text_rows: list[int],
    text_vectors: np.ndarray,
) -> np.ndarray:
    """Build the ``(n, d)`` output from per-tower vectors of the rows that used each tower.

    ``image_rows`` and ``text_rows`` are ascending row indices, one per vector. Rows in both
    lists are fused with ``policy``; rows in one list take that vector.
    """
    towers = ((image_rows, image_vectors), (text_rows, text_vectors))
    parts = [(rows, vectors) for rows, vectors in towers if rows]
    dims = sorted({vectors.shape[1] for _, vectors in parts})
    if len(dims) > 1:
        raise ModelError(
            f"image and text vectors differ in size {dims}; this checkpoint cannot put both "
            "in one space"
        )
    out = np.zeros((n, dims[0] if dims else 0), dtype=np.float32)
    for rows, vectors in parts:
        out[rows] = vectors
    both = np.intersect1d(image_rows, text_rows)
    if both.size:
        out[both] = combine(
            policy,
            image_vectors[np.searchsorted(image_rows, both)],
            text_vectors[np.searchsorted(text_rows, both)],
        )
    return out

