"""Scoring speed: the blocked, vectorised tie-safe scorer against a per-query Python loop.

MMEB-shaped input: 1000 queries, 1000 candidates each, drawn from a pool of unique targets.
Reports seconds for both and their ratio; the two must agree exactly (checked here too).

    python benchmarks/bench_scoring.py [--dim 1024] [--targets 50000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mmeb.metrics import l2_normalize, rank_counts, summarize_metrics


def naive(queries, targets, query_index, candidates):
    above = np.empty(len(candidates), dtype=np.int64)
    tied = np.empty(len(candidates), dtype=np.int64)
    for row, cands in enumerate(candidates):
        cands = cands[cands >= 0]
        scores = targets[cands] @ queries[query_index[row]]
        gold = scores[0]
        close = np.abs(scores - gold) <= 1e-9
        above[row] = int((~close & (scores > gold)).sum())
        tied[row] = int(close.sum()) - 1
    return above, tied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    queries = l2_normalize(rng.standard_normal((args.queries, args.dim)))
    targets = l2_normalize(rng.standard_normal((args.targets, args.dim)))
    candidates = np.stack([rng.choice(args.targets, args.candidates, replace=False)
                           for _ in range(args.queries)])
    query_index = np.arange(args.queries)

    start = time.perf_counter()
    counts = rank_counts(queries, targets, query_index, candidates)
    summarize_metrics(counts)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    above, tied = naive(queries, targets, query_index, candidates)
    slow = time.perf_counter() - start
    assert (above == counts.above).all()
    assert (tied == counts.tied).all()
    print(f"queries={args.queries} candidates={args.candidates} targets={args.targets} "
          f"dim={args.dim}")
    print(f"vectorised: {fast:.3f} s   per-query loop: {slow:.3f} s   "
          f"speed-up: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
