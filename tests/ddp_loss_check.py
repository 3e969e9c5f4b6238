"""Run under torchrun (2 processes, gloo): the sharded loss's gradients equal the full batch's.

Each process holds half of the same random batch. After backward through the gathered loss,
each process's embedding gradients, averaged as DDP averages parameter gradients, must equal
the single-process gradient of the whole batch's loss. Prints "ok" on rank 0.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from vlm2vec.loss import global_mean, info_nce


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(0)
    n, d = 8, 6
    q, t, neg = (torch.randn(n, d, generator=gen) for _ in range(3))
    mask = torch.tensor([True, False, True, True, False, False, True, True])
    kwargs = {"temperature": 0.1, "symmetric": True}

    full = [x.clone().requires_grad_() for x in (q, t, neg)]
    # single process: no group is consulted when world() says 1, so compute it locally
    dist_state = dist.is_initialized
    dist.is_initialized = lambda: False  # type: ignore[assignment]
    full_loss = info_nce(full[0], full[1], negatives=full[2], negative_mask=mask, **kwargs)
    full_loss.backward()
    dist.is_initialized = dist_state  # type: ignore[assignment]

    rows = slice(rank * n // world, (rank + 1) * n // world)
    local = [x[rows].clone().requires_grad_() for x in (q, t, neg)]
    loss = info_nce(local[0], local[1], negatives=local[2], negative_mask=mask[rows], **kwargs)
    loss.backward()
    logged = global_mean(loss)
    assert abs(logged - full_loss.item()) < 1e-5, (logged, full_loss.item())
    for mine, ref in zip(local, full, strict=True):
        assert mine.grad is not None
        assert ref.grad is not None
        torch.testing.assert_close(mine.grad / world, ref.grad[rows], rtol=1e-5, atol=1e-7)
    if rank == 0:
        print("ok")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
