"""Vectorised tie-safe metrics against a naive per-query enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mmeb.metrics import rank_counts, summarize_metrics


def naive_metrics(scores_per_row: list[np.ndarray]) -> dict[str, float]:
    """Average each metric over every equally likely placement of the gold among its ties."""
    totals = dict.fromkeys(("hit@1", "hit@5", "hit@10", "mrr", "ndcg@5", "ndcg@10"), 0.0)
    for scores in scores_per_row:
        gold = scores[0]
        above = sum(1 for s in scores[1:] if s > gold)
        tied = sum(1 for s in scores[1:] if s == gold)
        ranks = [above + 1 + p for p in range(tied + 1)]
        for rank in ranks:
            w = 1 / len(ranks)
            for k in (1, 5, 10):
                totals[f"hit@{k}"] += w * (rank <= k)
            totals["mrr"] += w / rank
            for k in (5, 10):
                totals[f"ndcg@{k}"] += w * (1 / math.log2(rank + 1) if rank <= k else 0.0)
    return {k: v / len(scores_per_row) for k, v in totals.items()}


def brute_force_hit1(scores: np.ndarray) -> float:
    """hit@1 under random tie-breaking by enumerating all orders of the tied top group."""
    top = scores.max()
    group = [i for i, s in enumerate(scores) if s == top]
    wins = sum(order[0] == 0 for order in itertools.permutations(group))
    return wins / math.factorial(len(group))


def make_case(seed: int, rows: int = 60, dim: int = 4, n_targets: int = 40, width: int = 25):
    rng = np.random.default_rng(seed)
    # few distinct values -> many exact ties between distinct candidates
    targets = rng.integers(-2, 3, size=(n_targets, dim)).astype(np.float64)
    queries = rng.integers(-2, 3, size=(rows, dim)).astype(np.float64)
    candidates = np.full((rows, width), -1)
    for r in range(rows):
        length = rng.integers(2, width + 1)
        candidates[r, :length] = rng.choice(n_targets, size=length, replace=False)
    return queries, targets, np.arange(rows), candidates


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_metrics_equal_naive_loop_with_ties(seed):
    queries, targets, qidx, cands = make_case(seed)
    fast = summarize_metrics(rank_counts(queries, targets, qidx, cands))
    rows = [np.array([queries[qidx[r]] @ targets[c] for c in cands[r] if c >= 0])
            for r in range(len(cands))]
    slow = naive_metrics(rows)
    assert fast == pytest.approx(slow, abs=1e-12)
    # and hit@1 agrees with brute-force enumeration of tie orders
    assert fast["hit@1"] == pytest.approx(np.mean([brute_force_hit1(s) for s in rows]))


def test_dense_and_gathered_scoring_agree(monkeypatch):
    """The two block strategies (matrix product vs gathered vectors) count identically."""
    queries, targets, qidx, cands = make_case(7, n_targets=200, width=3)
    gathered = rank_counts(queries, targets, qidx, cands)  # 200 > 64 * 3 -> gather path
    wide = np.concatenate([cands, np.full((len(cands), 40), -1)], axis=1)
    dense = rank_counts(queries, targets, qidx, wide)  # 200 <= 64 * 43 -> matrix path
    np.testing.assert_array_equal(gathered.above, dense.above)
    np.testing.assert_array_equal(gathered.tied, dense.tied)


def test_small_blocks_give_the_same_counts(monkeypatch):
    import mmeb.metrics as metrics

    queries, targets, qidx, cands = make_case(3)
    whole = rank_counts(queries, targets, qidx, cands)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1)  # one row per block
    monkeypatch.setattr(metrics, "_MIN_BLOCK_ROWS", 1)
    blocked = rank_counts(queries, targets, qidx, cands)
    np.testing.assert_array_equal(whole.above, blocked.above)
    np.testing.assert_array_equal(whole.tied, blocked.tied)


@pytest.mark.parametrize("gap", [3e-8, -3e-8, 0.0])
def test_scores_closer_than_float32_resolution_are_ordered_exactly(gap):
    """A rival 3e-8 above or below the gold is above or below it, not tied (float64 recheck)."""
    angle = np.arccos(0.5)
    gold = np.array([np.cos(angle), np.sin(angle), 0.0])
    rival_cos = 0.5 + gap
    rival = np.array([rival_cos, 0.0, np.sqrt(1 - rival_cos**2)])
    query = np.array([[1.0, 0.0, 0.0]])
    counts = rank_counts(query, np.stack([gold, rival]), np.array([0]), np.array([[0, 1]]))
    assert (counts.above[0], counts.tied[0]) == {3e-8: (1, 0), -3e-8: (0, 0), 0.0: (0, 1)}[gap]


def test_constant_encoder_scores_chance_not_100():
    rows, width = 50, 10
    queries = np.ones((rows, 3)) / np.sqrt(3)
    targets = np.ones((200, 3)) / np.sqrt(3)
    cands = np.arange(rows * width).reshape(rows, width) % 200
    metrics = summarize_metrics(rank_counts(queries, targets, np.arange(rows), cands))
    assert metrics["hit@1"] == pytest.approx(1 / width)
    assert metrics["hit@5"] == pytest.approx(5 / width)
    assert metrics["hit@10"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx(np.mean(1 / np.arange(1, width + 1)))


def test_perfect_ranking_scores_one():
    targets = np.eye(6)
    queries = np.eye(6)
    cands = np.array([[i, *[j for j in range(6) if j != i]] for i in range(6)])
    metrics = summarize_metrics(rank_counts(queries, targets, np.arange(6), cands))
    assert all(v == pytest.approx(1.0) for v in metrics.values())
