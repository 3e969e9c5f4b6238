"""Comparison speed: vectorised bootstrap and permutation test against per-resample loops.

MMEB-shaped input: 3 models x 36 datasets x 1000 queries, 1000 resamples and permutations.
Reports seconds for the whole `compare` (intervals for every dataset and aggregate, paired tests
of two models against the first) and for a loop that draws one resample at a time for the same
per-dataset intervals and tests; the per-dataset intervals of both are checked to agree.

    python benchmarks/bench_compare.py [--queries 1000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mmeb.leaderboard import ModelResults, compare
from mmeb.leaderboard.stats import bootstrap_indices, sign_flips
from mmeb.metrics import RankCounts, chance_hit1, summarize_metrics
from mmeb.results import encode_outcomes
from mmeb.tasks import collections


def result(model: str, task: str, correct: np.ndarray) -> dict:
    spec = next(t for t in collections()["eval"] if t.name == task)
    counts = RankCounts(np.where(correct, 0, 3), np.zeros(len(correct), dtype=np.int64),
                        np.full(len(correct), 1000))
    return {"task": task, "model": model, "meta_task": spec.meta_task,
            "metrics": summarize_metrics(counts), "chance": chance_hit1(counts),
            "counts": {"rows": len(correct)}, "outcomes": encode_outcomes(counts)}


def looped(values: dict[str, dict[str, np.ndarray]], resamples: int) -> dict[tuple, tuple]:
    """The same per-dataset intervals and p-values, one resample per Python iteration."""
    out = {}
    names = list(values)
    for task in values[names[0]]:
        rows = len(values[names[0]][task])
        indices = bootstrap_indices(rows, resamples, 0, task)
        flips = sign_flips(rows, resamples, 0, task)
        for name in names:
            means = [values[name][task][indices[i]].mean() for i in range(resamples)]
            out[(task, name)] = tuple(np.quantile(means, [0.025, 0.975]))
            if name != names[0]:
                d = values[name][task] - values[names[0]][task]
                null = [float((flips[i] * d).mean()) for i in range(resamples)]
                _ = (np.sum(np.abs(null) >= abs(d.mean()) - 1e-12) + 1) / (resamples + 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tasks = [t.name for t in collections()["eval"]]
    values = {m: {t: (rng.random(args.queries) < r).astype(float) for t in tasks}
              for m, r in (("a", 0.40), ("b", 0.45), ("c", 0.50))}
    models = [ModelResults.from_documents(m, [result(m, t, v[t] > 0) for t in tasks])
              for m, v in values.items()]
    start = time.perf_counter()
    (table,) = compare(models, resamples=args.resamples)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    slow_intervals = looped(values, args.resamples)
    slow = time.perf_counter() - start
    cells = table.cells.set_index(["row", "column"])
    for (task, name), (lo, hi) in slow_intervals.items():
        assert np.isclose(cells.loc[(task, name), "lo"], lo)
        assert np.isclose(cells.loc[(task, name), "hi"], hi)
    print(f"compare (vectorised, all aggregates too): {fast:.2f} s; "
          f"per-resample loop (datasets only): {slow:.2f} s; speed-up {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
