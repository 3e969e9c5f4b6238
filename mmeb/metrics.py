"""Tie-safe ranking metrics over per-query candidate lists.

MMEB puts the gold at index 0 of every candidate list, so ``argmax == 0`` hands the gold every
tie and a constant encoder scores 100%. Here a query's outcome is summarised by two counts:
``above`` (distinct candidates scoring higher than the gold) and ``tied`` (distinct candidates
scoring the same). Under random tie-breaking the gold's rank is uniform over
``above + 1 .. above + tied + 1``; every metric is its expected value over that range, so a
constant encoder scores chance. (Copies of the gold never reach this point: the data layer keeps
one entry per distinct candidate.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KS = (1, 5, 10)
METRIC_NAMES = ("hit@1", "hit@5", "hit@10", "mrr", "ndcg@5", "ndcg@10")
MAIN_METRIC = "hit@1"
#: Scores closer than this count as tied (float64 cosines; far below any model's precision).
TIE_ATOL = 1e-9
#: Float32 scores further apart than this are ordered correctly whatever the rounding
#: (float32 dot products of unit vectors err by ~1e-6); closer pairs are re-scored in float64.
_RECHECK_GAP = 1e-4
#: Budget for one block of scores or gathered vectors (elements): small enough that scoring
#: adds a few MB whatever the number of queries ...
_BLOCK_ELEMENTS = 1 << 20
#: ... but never fewer rows than this, or a product against many targets gets slow.
_MIN_BLOCK_ROWS = 256


@dataclass
class RankCounts:
    above: np.ndarray  # (rows,) distinct candidates strictly above the gold
    tied: np.ndarray  # (rows,) distinct non-gold candidates tied with the gold
    num_candidates: np.ndarray  # (rows,)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def rank_counts(
    query_vecs: np.ndarray,
    target_vecs: np.ndarray,
    query_index: np.ndarray,
    candidates: np.ndarray,
) -> RankCounts:
    """Score every row's query against its own candidates (column 0 = gold, -1 = padding).

    Scores are computed in float32 in row blocks (bounded memory); only candidates whose score
    lies within ``_RECHECK_GAP`` of the gold's are re-scored in float64, so ties are decided
    exactly. One matrix product per block against all unique targets is much faster than
    gathering each row's candidate vectors unless the targets vastly outnumber a row's list.
    """
    rows, width = candidates.shape
    valid = candidates >= 0
    t32 = target_vecs.astype(np.float32)  # queries are converted per block (no full copy)
    above = np.empty(rows, dtype=np.int64)
    tied = np.empty(rows, dtype=np.int64)
    dense = len(target_vecs) <= 64 * width
    per_row = len(target_vecs) if dense else width * max(target_vecs.shape[1], 1)
    block = max(1, min(rows, max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // max(per_row, 1))))
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        qi = query_index[start:stop]
        idx = np.where(valid[start:stop], candidates[start:stop], 0)
        q32 = query_vecs[qi].astype(np.float32)
        if dense:
            scores = np.take_along_axis(q32 @ t32.T, idx, axis=1)
        else:
            scores = np.matmul(t32[idx], q32[:, :, None])[..., 0]
        ok = valid[start:stop]
        near = ok & (np.abs(scores - scores[:, :1]) <= _RECHECK_GAP)
        r, c = np.nonzero(near)
        exact = np.einsum("nd,nd->n", target_vecs[idx[r, c]], query_vecs[qi[r]])
        gold = np.zeros(stop - start)
        gold[r[c == 0]] = exact[c == 0]
        diff = exact - gold[r]
        is_tied = np.zeros_like(near)
        is_tied[r, c] = np.abs(diff) <= TIE_ATOL
        is_above = ok & ~near & (scores > scores[:, :1])
        is_above[r, c] = diff > TIE_ATOL
        above[start:stop] = is_above.sum(axis=1)
        tied[start:stop] = is_tied.sum(axis=1) - 1  # the gold ties with itself
    return RankCounts(above, tied, valid.sum(axis=1))


def _expected_prefix(values_cum: np.ndarray, counts: RankCounts, k: int | None) -> np.ndarray:
    """E[f(rank)] with rank uniform on above+1..above+tied+1, f given by its prefix sums.

    ``values_cum[r]`` = f(1) + ... + f(r); truncation at ``k`` makes f zero beyond rank k.
    """
    lo = counts.above
    hi = counts.above + counts.tied + 1
    if k is not None:
        lo, hi = np.minimum(lo, k), np.minimum(hi, k)
    return (values_cum[hi] - values_cum[lo]) / (counts.tied + 1)


def per_query_metrics(counts: RankCounts) -> dict[str, np.ndarray]:
    max_rank = int((counts.above + counts.tied + 1).max(initial=1))
    ranks = np.arange(1, max_rank + 1, dtype=np.float64)
    ones = np.concatenate([[0.0], np.cumsum(np.ones_like(ranks))])
    recip = np.concatenate([[0.0], np.cumsum(1.0 / ranks)])
    dcg = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(ranks + 1.0))])
    out = {f"hit@{k}": _expected_prefix(ones, counts, k) for k in KS}
    out["mrr"] = _expected_prefix(recip, counts, None)
    for k in (5, 10):  # one relevant item: ideal DCG is 1
        out[f"ndcg@{k}"] = _expected_prefix(dcg, counts, k)
    return out


def reciprocal_rank_at(counts: RankCounts, k: int) -> np.ndarray:
    """Per-query expected reciprocal rank, zero beyond rank ``k`` (MRR@k as leaderboards cut it)."""
    ranks = np.arange(1, k + 1, dtype=np.float64)
    recip = np.concatenate([[0.0], np.cumsum(1.0 / ranks)])
    return _expected_prefix(recip, counts, k)


def summarize_metrics(counts: RankCounts) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in per_query_metrics(counts).items()}


def chance_hit1(counts: RankCounts) -> float:
    """hit@1 of an encoder that ranks at random."""
    return float(np.mean(1.0 / counts.num_candidates))


#: Fewer queries than this never earn a chance-level warning: too few to tell anything apart.
MIN_ROWS_FOR_CHANCE = 10


def near_chance(hit1: float, chance: float, rows: int) -> bool:
    """True when hit@1 is not clearly above chance (within three standard errors), judged only
    on a sample that can tell: at least :data:`MIN_ROWS_FOR_CHANCE` queries, and enough that a
    perfect score would itself lie clearly above chance. (``--limit 2`` on a two-candidate task
    cannot tell a perfect encoder from a coin, so it is not flagged.)"""
    stderr = float(np.sqrt(max(chance * (1 - chance), 1e-12) / max(rows, 1)))
    threshold = chance + 3 * stderr
    if rows < MIN_ROWS_FOR_CHANCE or threshold >= 1.0:
        return False
    return hit1 <= threshold
