"""Several processes sharing one run: ``torchrun --nproc_per_node N -m mmeb run ...``.

The launcher (torchrun, ``accelerate launch``) sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.
Every process reads the same rows; each encodes its contiguous share of a side's inputs still
to compute, and the shares are gathered in rank order, so every process ends with the vectors
one process would have computed. Rank 0 alone reads and writes the output folder and the
embedding cache; it tells the others what to do. Vectors travel as CPU tensors over gloo, so
the same code serves CPU and GPU encoders. torch is imported only when ``WORLD_SIZE`` > 1.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmeb.errors import MMEBError


@dataclass(frozen=True)
class ShardGroup:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_writer(self) -> bool:
        """The one process that touches the output folder and the cache."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This process's contiguous part of ``n`` inputs (sizes differ by at most one)."""
        bounds = np.linspace(0, n, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a small JSON-like object)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value if self.is_writer else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def exchange(self, value: Any) -> list[Any]:
        """Every process's ``value`` (a small JSON-like object), in rank order, everywhere."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def gather_rows(self, part: np.ndarray) -> np.ndarray:
        """Every process's ``(n_i, d)`` float64 rows, concatenated in rank order, everywhere."""
        if self.world == 1:
            return part
        import torch
        import torch.distributed as dist

        shape = torch.tensor(part.shape, dtype=torch.int64) if part.size else torch.tensor(
            [part.shape[0], 0], dtype=torch.int64)
        shapes = [torch.zeros(2, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(shapes, shape)
        rows = [int(s[0]) for s in shapes]
        dim = max(int(s[1]) for s in shapes)
        padded = torch.zeros((max(rows), dim), dtype=torch.float64)
        if part.size:
            padded[: part.shape[0]] = torch.from_numpy(np.ascontiguousarray(part, np.float64))
        gathered = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        return np.concatenate([g[:n].numpy() for g, n in zip(gathered, rows, strict=True)])

    def broadcast_rows(self, rows: np.ndarray | None) -> np.ndarray:
        """Rank 0's ``(n, d)`` float64 array on every process."""
        if self.world == 1:
            assert rows is not None
            return rows
        import torch
        import torch.distributed as dist

        shape = self.broadcast(list(rows.shape) if rows is not None else None)
        tensor = (torch.from_numpy(np.ascontiguousarray(rows, np.float64)) if rows is not None
                  else torch.empty(tuple(shape), dtype=torch.float64))
        dist.broadcast(tensor, src=0)
        return tensor.numpy()


_GROUP: ShardGroup | None = None


def current_group() -> ShardGroup:
    """This process's place in the launch (a group of one without a launcher)."""
    global _GROUP
    if _GROUP is None:
        _GROUP = _from_environment()
    return _GROUP


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise MMEBError(f"environment variable {name}={value!r} is not an integer; "
                        "launch with torchrun or accelerate launch") from None


def _from_environment() -> ShardGroup:
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return ShardGroup()
    rank = _env_int("RANK", 0)
    group = ShardGroup(rank=rank, world=world, local_rank=_env_int("LOCAL_RANK", rank))
    try:
        import torch.distributed as dist
    except ImportError:
        raise MMEBError(f"WORLD_SIZE={world} asks for a sharded run, which needs torch "
                        "(pip install torch)") from None
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world)
        atexit.register(_leave, dist)
    return group


def _leave(dist: Any) -> None:
    """Wait for every process, then close the group: a process that exits with gloo's threads
    still running is aborted (SIGABRT), which fails the whole launch."""
    with contextlib.suppress(Exception):
        dist.barrier()
        dist.destroy_process_group()


def device_for_rank(device: str | None, group: ShardGroup) -> str | None:
    """``--device cuda`` under a launcher means each process's own GPU."""
    if group.world > 1 and device == "cuda":
        return f"cuda:{group.local_rank}"
    return device
