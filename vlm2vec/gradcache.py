"""One optimizer step's gradients, with the whole batch in one forward or through GradCache.

GradCache (Gao et al., 2021) makes the contrastive loss of a large batch fit in memory: the loss
couples every pair, but its gradient with respect to the parameters factors through the
embeddings. So:

1. encode the batch chunk by chunk without a graph, recording each chunk's RNG state;
2. compute the loss on the cached embeddings and backpropagate to them only (cheap: [B, D]);
3. re-encode each chunk with a graph, replaying its RNG state (same dropout masks), and
   backpropagate ``dot(embeddings, cached gradient)``, whose parameter gradient is exactly the
   chunk's share of the loss gradient.

Under DDP every chunk but the last runs in ``no_sync``; the last one's backward all-reduces the
gradients accumulated over all chunks. A chunk is ``gc_chunk_size`` pairs, encoded in one call
(its queries, targets and hard negatives), so each forward has one backward, as DDP expects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

Sides = dict[str, dict[str, Any]]  # side name -> collated batch
Reps = dict[str, torch.Tensor]  # side name -> [rows, D]
Forward = Callable[[Sides], Reps]
LossFn = Callable[[Reps], torch.Tensor]


def plain_step(forward: Forward, sides: Sides, loss_fn: LossFn) -> torch.Tensor:
    """Encode everything with a graph, compute the loss, backpropagate; returns the loss."""
    loss = loss_fn(forward(sides))
    loss.backward()
    return loss.detach()


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _replay(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device
            ) -> Iterator[None]:
    """Run with a recorded RNG state; the RNG afterwards is as before the block."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def gradcache_step(
    forward: Forward,
    chunks: Sequence[Sides],
    loss_fn: LossFn,
    *,
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The same loss and gradients as :func:`plain_step` on the concatenated chunks.

    ``no_sync`` is DDP's ``no_sync`` (None without DDP); ``device`` is where the model runs
    (its RNG is recorded and replayed along with the CPU one).
    """
    device = device or torch.device("cpu")
    states, cached = [], []
    for chunk in chunks:
        states.append(_rng_state(device))
        with torch.no_grad():
            cached.append({k: v.detach() for k, v in forward(chunk).items()})
    # Sides absent from a chunk (say, no hard negative in it) are simply not there.
    sides = list(dict.fromkeys(k for c in cached for k in c))
    # Float32 leaves: the loss and the cached gradients keep full precision under bf16.
    reps = {k: torch.cat([c[k] for c in cached if k in c]).float().requires_grad_()
            for k in sides}
    loss = loss_fn(reps)
    loss.backward()
    grads = {k: (r.grad if r.grad is not None else torch.zeros_like(r)) for k, r in reps.items()}
    offsets = dict.fromkeys(sides, 0)
    for i, (chunk, state) in enumerate(zip(chunks, states, strict=True)):
        last = i == len(chunks) - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync, _replay(state, device):
            out = forward(chunk)
            surrogate = torch.zeros((), device=device)
            for k in out:
                rows = out[k].shape[0]
                grad = grads[k][offsets[k] : offsets[k] + rows]
                surrogate = surrogate + torch.sum(out[k].float() * grad.float())
                offsets[k] += rows
            surrogate.backward()
    return loss.detach()
