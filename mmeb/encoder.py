"""The contract between the evaluation engine and a model.

An encoder turns a batch of :class:`~mmeb.items.Item` into an ``(n, d)`` array. The engine
batches, deduplicates, normalises and scores; an adapter only encodes. Two optional
attributes refine the contract:

- ``modalities``: the item modalities the model accepts (``"text"``, ``"image"``,
  ``"image+text"``); the engine refuses a task whose inputs fall outside them.
- ``config``: a JSON-serialisable mapping of the settings that change the vectors
  (checkpoint, fusion and instruction policy, image size...). It is recorded in every result
  and is part of the embedding cache's key.
- ``reads_images``: False for a model that never looks at pixels; the engine then does not
  decode images ahead of its calls (mmeb.prefetch).
- ``scores_chance``: True for a model *meant* to score at chance (the ``random`` baseline):
  its tasks at chance level get one summary line instead of a warning each. A real model at
  chance still warns on every task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mmeb.items import Item, Side

if TYPE_CHECKING:
    from mmeb.tasks import TaskSpec

ALL_MODALITIES = frozenset({"text", "image", "image+text"})


@runtime_checkable
class Encoder(Protocol):
    """Anything with a ``name`` and this ``encode`` method can be evaluated."""

    name: str

    def encode(self, items: Sequence[Item], *, side: Side, task: TaskSpec) -> Any:
        """Return an ``(len(items), d)`` numpy array or torch tensor, one row per item."""
        ...


def encoder_modalities(encoder: object) -> frozenset[str]:
    return frozenset(getattr(encoder, "modalities", ALL_MODALITIES))


def scores_chance(encoder: object) -> bool:
    return bool(getattr(encoder, "scores_chance", False))


def encoder_config(encoder: object) -> dict[str, Any]:
    config = getattr(encoder, "config", None)
    if callable(config):
        config = config()
    return dict(config) if isinstance(config, Mapping) else {}
