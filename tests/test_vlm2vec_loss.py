"""InfoNCE against a row-by-row computation; the gather's gradients across two processes."""

from __future__ import annotations

import math

import torch
from vlm2vec_fixtures import REPO, run_python

from vlm2vec.loss import all_gather, info_nce


def naive(q: torch.Tensor, t: torch.Tensor, tau: float, neg: torch.Tensor | None = None,
          mask: list[bool] | None = None) -> float:
    """Mean over queries of -log softmax(cos(q_i, .) / tau)[i], one row at a time."""
    q = q / q.norm(dim=1, keepdim=True)
    t = t / t.norm(dim=1, keepdim=True)
    cands = [t[j] for j in range(len(t))]
    if neg is not None and mask is not None:
        neg = neg / neg.norm(dim=1, keepdim=True)
        cands += [neg[j] for j in range(len(neg)) if mask[j]]
    total = 0.0
    for i in range(len(q)):
        scores = [float(q[i] @ c) / tau for c in cands]
        top = max(scores)
        total += -(scores[i] - top - math.log(sum(math.exp(s - top) for s in scores)))
    return total / len(q)


def test_info_nce_equals_the_row_by_row_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    q, t, neg = (torch.randn(6, 5, generator=gen) for _ in range(3))
    mask = [True, False, False, True, True, False]
    got = info_nce(q, t, temperature=0.02)
    assert abs(got.item() - naive(q, t, 0.02)) < 1e-4 * naive(q, t, 0.02)
    got = info_nce(q, t, temperature=0.5, negatives=neg, negative_mask=torch.tensor(mask))
    assert abs(got.item() - naive(q, t, 0.5, neg, mask)) < 1e-5
    both = info_nce(q, t, temperature=0.5, symmetric=True)
    assert abs(both.item() - (naive(q, t, 0.5) + naive(t, q, 0.5)) / 2) < 1e-5


def test_hard_negatives_raise_the_loss() -> None:
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(8, 4, generator=gen)
    t = q + 0.3 * torch.randn(8, 4, generator=gen)  # positives are near their queries
    neg = torch.randn(8, 4, generator=gen)
    base = info_nce(q, t, temperature=0.1).item()
    assert info_nce(q, t, temperature=0.1, negatives=neg).item() > base
    none = torch.zeros(8, dtype=torch.bool)  # all masked: the same as no negatives
    masked = info_nce(q, t, temperature=0.1, negatives=neg, negative_mask=none).item()
    assert abs(masked - base) < 1e-6


def test_gather_is_the_identity_in_one_process() -> None:
    x = torch.randn(3, 2)
    assert all_gather(x) is x


def test_sharded_loss_has_the_full_batch_gradient_over_two_processes() -> None:
    result = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2",
                         str(REPO / "tests" / "ddp_loss_check.py")], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_copies_of_a_positive_are_left_out_of_its_softmax() -> None:
    gen = torch.Generator().manual_seed(3)
    q, neg = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    t = torch.randn(5, 4, generator=gen)
    t[3] = t[1]  # rows 1 and 3 share one positive (the same class name drawn twice)
    neg[4] = t[0]  # and row 4's hard negative is row 0's positive
    keys = torch.tensor([10, 11, 12, 11, 13])
    neg_keys = torch.tensor([20, 21, 22, 23, 10])
    got = info_nce(q, t, temperature=0.5, negatives=neg, target_keys=keys,
                   negative_keys=neg_keys).item()
    # Row by row: each row's softmax over the candidates that are not copies of its positive.
    qn, cands = q / q.norm(dim=1, keepdim=True), torch.cat([t, neg])
    cands = cands / cands.norm(dim=1, keepdim=True)
    all_keys = torch.cat([keys, neg_keys])
    expected = 0.0
    for i in range(5):
        kept = [j for j in range(10) if j == i or all_keys[j] != keys[i]]
        scores = torch.stack([qn[i] @ cands[j] for j in kept]) / 0.5
        expected += float(-torch.log_softmax(scores, 0)[kept.index(i)])
    assert abs(got - expected / 5) < 1e-5
    unmasked = info_nce(q, t, temperature=0.5, negatives=neg).item()
    assert unmasked > got  # the copies scored like the positive: counted as negatives


def test_symmetric_term_leaves_out_the_queries_of_copies() -> None:
    gen = torch.Generator().manual_seed(4)
    q, t = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    t[2] = t[0]  # rows 0 and 2 share a positive: query 2 matches target 0 as well
    keys = torch.tensor([5, 6, 5, 7])
    got = info_nce(q, t, temperature=0.5, symmetric=True, target_keys=keys).item()
    qn, tn = q / q.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)

    def side(a: torch.Tensor, b: torch.Tensor) -> float:
        total = 0.0
        for i in range(4):
            kept = [j for j in range(4) if j == i or keys[j] != keys[i]]
            scores = torch.stack([a[i] @ b[j] for j in kept]) / 0.5
            total += float(-torch.log_softmax(scores, 0)[kept.index(i)])
        return total / 4

    assert abs(got - (side(qn, tn) + side(tn, qn)) / 2) < 1e-5
