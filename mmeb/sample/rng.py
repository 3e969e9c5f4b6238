"""A random source whose stream is the same on every Python version and platform.

Python documents only ``random.Random(seed).random()`` (with a str/int seed) as stable across
versions; ``randrange``, ``choice``, ``shuffle`` and ``sample`` may change. numpy's Generator
methods carry no such promise either. So every draw here is built from ``random()`` alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Rng:
    def __init__(self, *parts: object) -> None:
        # A str seed is hashed with SHA-512 (seeding version 2): the same on every machine.
        self._random = random.Random("\x1f".join(str(p) for p in parts))

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``."""
        if n <= 0:
            raise ValueError(f"below({n}): n must be positive")
        return min(int(self._random.random() * n), n - 1)

    def between(self, low: int, high: int) -> int:
        """A uniform integer in ``[low, high]``."""
        return low + self.below(high - low + 1)

    def chance(self, p: float) -> bool:
        return self._random.random() < p

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        out = list(items)
        for i in range(len(out) - 1, 0, -1):  # Fisher-Yates
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """``k`` distinct positions of ``items``, in random order."""
        if k > len(items):
            raise ValueError(f"sample of {k} from {len(items)} items")
        pool = list(items)
        for i in range(k):  # partial Fisher-Yates
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def child(self, *parts: object) -> Rng:
        """An independent stream, so adding draws in one place never shifts another's."""
        return Rng(self._random.random(), *parts)
