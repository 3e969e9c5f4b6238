"""InfoNCE over in-batch negatives gathered from every process.

Each process holds B of the N = W * B pairs of a global batch. Its loss is the mean, over its
own B queries, of the cross-entropy of the query against all N targets (plus the gathered hard
negatives), at temperature tau. The loss of the global batch is the mean of the W local
losses.

Gradients, and why no factor W appears: :func:`all_gather` is differentiable, and the backward
of a gather sums, for each process's own rows, the gradients that all W local losses send
them. DDP then averages parameter gradients over the W processes. Sum, then average, gives
exactly the gradient of the mean of the W local losses, i.e. of the global batch's loss. The
original code reaches the same gradient differently: its gather passes no gradient to other
processes, it computes the loss over all N queries on every process, and multiplies that loss
by W to undo DDP's averaging. Both equal the single-process loss on the whole batch, which the
tests check.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) over processes, in rank order.

    Differentiable: each process's rows receive the sum of the gradients from all processes.
    Without a process group it returns ``x`` itself.
    """
    _, size = world()
    if size == 1:
        return x
    return _AllGather.apply(x)  # type: ignore[no-any-return]


def info_nce(
    queries: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 0.02,
    negatives: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
    symmetric: bool = False,
    normalize: bool = True,
    target_keys: torch.Tensor | None = None,
    negative_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """This process's InfoNCE loss (query -> target, optionally also target -> query).

    ``queries`` and ``targets`` are [B, D], row i of each forming a pair. ``negatives`` [B, D]
    are hard negatives, one per row at most; ``negative_mask`` [B] tells which rows have one
    (the others are ignored). Everything is gathered over processes before scoring.

    ``target_keys`` (and ``negative_keys`` with hard negatives) [B] name each input's content:
    a candidate with the same key as a row's positive is a copy of it (the same class name
    drawn twice in one batch), not a negative, and is left out of that row's softmax; with
    ``symmetric``, the queries of such copies are left out of the target's softmax too.
    """
    if normalize:
        queries, targets = F.normalize(queries, dim=-1), F.normalize(targets, dim=-1)
        if negatives is not None:
            negatives = F.normalize(negatives, dim=-1)
    rank, _ = world()
    rows = queries.shape[0]
    all_targets = all_gather(targets)
    candidates = all_targets
    if negatives is not None:
        if negative_mask is None:
            negative_mask = torch.ones(rows, dtype=torch.bool, device=negatives.device)
        all_negatives = all_gather(negatives)
        candidates = torch.cat([all_targets, all_negatives], dim=0)
        mask = all_gather(negative_mask.to(queries.dtype)) > 0.5
    labels = torch.arange(rows, device=queries.device) + rank * rows
    scores = queries @ candidates.T / temperature
    if negatives is not None:
        # Rows without a hard negative contribute a score of -inf (probability 0).
        keep = torch.cat([torch.ones_like(mask), mask])
        scores = scores.masked_fill(~keep[None, :], float("-inf"))
    copies = None
    if target_keys is not None:
        keys = all_gather(target_keys)
        if negatives is not None:
            if negative_keys is None:
                raise ValueError("negative_keys are needed with negatives and target_keys")
            keys = torch.cat([keys, all_gather(negative_keys)])
        copies = target_keys[:, None] == keys[None, :]
        copies[torch.arange(rows, device=copies.device), labels] = False
        scores = scores.masked_fill(copies, float("-inf"))
    loss = F.cross_entropy(scores, labels)
    if symmetric:
        all_queries = all_gather(queries)
        reverse = targets @ all_queries.T / temperature
        if copies is not None:
            # The queries whose positive is a copy of this target's are its matches too.
            reverse = reverse.masked_fill(copies[:, : all_queries.shape[0]], float("-inf"))
        loss = (loss + F.cross_entropy(reverse, labels)) / 2
    return loss


def global_mean(value: torch.Tensor) -> float:
    """The mean of a scalar over processes (for logging the global batch's loss)."""
    _, size = world()
    value = value.detach().float().clone()
    if size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= size
    return float(value.item())
