"""One side of one task to vectors: cache lookup, then sharding, then batched encoding.

``encode_in_batches`` (mmeb.engine, passed in as ``encode`` so that the engine alone imports
this module) stays the one place that calls the encoder and checks what it returns; this module
decides *which* items reach it and in which process, and puts the rows back in the items'
order. With no cache and one process it is exactly one call of ``encode_in_batches``.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmeb.embcache import EmbeddingCache
from mmeb.encoder import Encoder, encoder_config
from mmeb.items import Item, Side
from mmeb.itemtable import subset
from mmeb.prefetch import reads_images
from mmeb.registry import find_model, identity_model_args
from mmeb.revision import checkpoint_digest
from mmeb.shard import ShardGroup, current_group
from mmeb.taskspec import TaskSpec


def encode_side(
    encode: Callable[..., np.ndarray],
    encoder: Encoder,
    items: Sequence[Item],
    *,
    side: Side,
    task: TaskSpec,
    batch_size: int,
    progress: bool = True,
    prefetch: int = 0,
    cache: EmbeddingCache | None = None,
    group: ShardGroup | None = None,
) -> np.ndarray:
    """L2-normalised float64 vectors of ``items`` (unique inputs of one side), in order."""
    group = group or current_group()
    side_instruction = task.query_instruction if side is Side.QUERY else task.target_instruction
    keys: list[str] = []
    hit_vectors: np.ndarray | None = None
    hit = np.zeros(len(items), dtype=bool)
    if cache is not None and group.is_writer:
        keys = cache.keys(items, side=side, side_instruction=side_instruction)
        hit, hit_vectors = cache.get(keys)
    if cache is not None:
        hit = np.asarray(group.broadcast(hit.tolist()), dtype=bool).reshape(len(items))
    todo = np.flatnonzero(~hit)
    mine = todo[group.share(len(todo))]
    part = np.zeros((0, 0))
    if len(mine):
        part = encode(
            encoder, subset(items, mine), side=side, task=task,
            batch_size=batch_size, progress=progress and group.is_writer,
            prefetch=prefetch if reads_images(encoder) else 0,
        )
    fresh = group.gather_rows(part)
    if cache is not None and group.is_writer:
        cache.put([keys[i] for i in todo.tolist()], fresh, label=f"{task.name} {side}")
    if not hit.any():
        return fresh
    out: np.ndarray | None = None
    if group.is_writer:
        assert hit_vectors is not None
        dim = hit_vectors.shape[1]
        if len(todo) and fresh.shape[1] != dim:
            from mmeb.errors import ModelError

            raise ModelError(
                f"model {encoder.name!r} returned {fresh.shape[1]}-d vectors where its cached "
                f"ones are {dim}-d ({task.name} {side}s); clear them with `mmeb cache rm`"
            )
        out = np.empty((len(items), dim), dtype=np.float64)
        out[hit] = hit_vectors
        if len(todo):
            out[todo] = fresh
    return group.broadcast_rows(out)


def open_cache(
    root: str | os.PathLike[str], encoder: Encoder, *, model: str, checkpoint: str | None,
    model_args: Mapping[str, Any], dtype: str | None,
) -> EmbeddingCache:
    """The cache of this model: every setting that can change a vector is in its identity."""
    return EmbeddingCache(root, {
        "adapter": encoder.name,
        "adapter_config": encoder_config(encoder),
        "adapter_code": _code_digest(encoder),
        "model": model,
        "checkpoint": checkpoint,
        "revision": _revision(model, checkpoint),
        "model_args": identity_model_args(model_args),
        "dtype": dtype,
    })


def _revision(model: str, checkpoint: str | None) -> str | None:
    """What identifies the weights: a local folder's (or file's) files, with their modification
    times (see :mod:`mmeb.revision`), else the registry's pinned Hub revision (None: the Hub's
    main)."""
    if checkpoint and Path(checkpoint).expanduser().exists():
        return "files:" + checkpoint_digest(Path(checkpoint).expanduser(), mtimes=True)
    entry = find_model(model)
    if entry is None or (checkpoint and checkpoint != entry.default_checkpoint):
        return None
    return entry.revision


def _code_digest(encoder: object) -> str:
    """The adapter's source (its class and bases): a fix to its pooling is a new model."""
    digest = hashlib.sha256()
    for cls in type(encoder).__mro__:
        try:
            source = inspect.getsourcefile(cls)
        except TypeError:  # builtins
            continue
        if source and os.path.isfile(source):
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()
