"""A deterministic encoder for smoke tests: each distinct input gets its own random vector.

The seed is a hash of the raw string and the image's file name and folder, so the vectors are the
same on every machine and in every run, and unrelated to content: scores sit at chance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmeb.encoder import ALL_MODALITIES
from mmeb.items import Item, Side
from mmeb.tasks import TaskSpec


def hashed_vector(key: str, dim: int) -> np.ndarray:
    """A standard-normal vector seeded by ``key``'s sha256: the same on every machine."""
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(dim)


class RandomEncoder:
    modalities = ALL_MODALITIES
    reads_images = False  # vectors come from file names: the engine need not decode pixels
    scores_chance = True  # a baseline: chance level is its expected score, not a defect

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        self.name = "random"
        self.dim = int(dim)
        self.seed = int(seed)
        self.config = {"dim": self.dim, "seed": self.seed}

    def _vector(self, item: Item) -> np.ndarray:
        image = ""
        if item.image_path:
            path = Path(item.image_path)
            image = f"{path.parent.name}/{path.name}"
        return hashed_vector(f"{self.seed}\0{item.raw}\0{image}", self.dim)

    # The protocol's signature; a random vector depends on the input alone.
    def encode(self, items: Sequence[Item], *, side: Side, task: TaskSpec) -> np.ndarray:  # noqa: ARG002
        return np.stack([self._vector(item) for item in items]).astype(np.float32)
