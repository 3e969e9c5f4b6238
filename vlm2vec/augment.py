"""Training-time picture augmentation: random shifts against the patch grid.

A patch transformer sees an object differently at every offset against its patch grid, so one
shape is many inputs to learn, and from a few thousand pictures it memorises the offsets it saw
(``benchmarks/bench_tiny_vision.py``). Shifting each training picture by a few pixels, drawn
anew every time it is used, shows the same content at other offsets. The shift is small and the
border is filled by repeating the edge pixels, so the background stays plain and a coarse
position ("at the top left") keeps its meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vlm2vec.data import Input, Pair

if TYPE_CHECKING:
    from PIL.Image import Image


def shift(image: Image, max_shift: int, rng: np.random.Generator) -> Image:
    """``image`` moved by up to ``max_shift`` pixels on each axis (uniform, independent),
    same size, the uncovered border filled with the nearest edge pixels."""
    from PIL import Image as PILImage

    if max_shift <= 0:
        return image
    pixels = np.asarray(image.convert("RGB"))
    h, w = pixels.shape[:2]
    padded = np.pad(pixels, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=2)
    return PILImage.fromarray(padded[dy:dy + h, dx:dx + w])


def shift_pairs(pairs: Sequence[Pair], max_shift: int, rng: np.random.Generator) -> list[Pair]:
    """``pairs`` with every picture (query, target and hard negative) read and shifted by
    :func:`shift`, each by its own draw; text-only inputs are left as they are."""
    import dataclasses

    from mmeb.items import load_image

    def one(inp: Input) -> Input:
        if inp.image is None:
            return inp
        picture = shift(load_image(inp.image, inp.origin), max_shift, rng)
        return dataclasses.replace(inp, pixels=picture)

    return [Pair(one(p.query), one(p.target), None if p.negative is None else one(p.negative))
            for p in pairs]
