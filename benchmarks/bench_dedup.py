"""Encoder work saved by encoding each unique input once.

For every task of a collection (default: the sample suite; `--data-dir` for a local MMEB copy or
the full-scale sample twin), counts the inputs an engine without deduplication would encode
(one query plus every candidate of every row) against the unique inputs mmeb encodes, and
checks the latter with a counting encoder run through the real engine.

    python benchmarks/bench_dedup.py [--split sample] [--data-dir DIR --tasks A,B]
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter

from tabulate import tabulate

from mmeb.data import load_task_inputs
from mmeb.engine import evaluate_inputs
from mmeb.random_encoder import RandomEncoder
from mmeb.tasks import get_task, select_tasks


class CountingEncoder(RandomEncoder):
    def __init__(self) -> None:
        super().__init__(dim=8)
        self.calls: Counter = Counter()

    def encode(self, items, *, side, task):
        self.calls[side] += len(items)
        return super().encode(items, side=side, task=task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", default="sample")
    parser.add_argument("--tasks", default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    logging.getLogger("mmeb").setLevel(logging.ERROR)  # chance-level warnings are expected here
    tasks = ([get_task(n) for n in args.tasks.split(",")] if args.tasks
             else select_tasks(args.split))
    rows = []
    naive_total = unique_total = 0
    for task in tasks:
        inputs, _ = load_task_inputs(task, data_dir=args.data_dir)
        naive = inputs.num_rows + int(inputs.candidates_per_row.sum())
        encoder = CountingEncoder()
        evaluate_inputs(encoder, inputs, progress=False)
        calls = encoder.calls["query"] + encoder.calls["target"]
        assert calls == len(inputs.queries) + len(inputs.targets)
        naive_total += naive
        unique_total += calls
        rows.append([task.name, inputs.num_rows, naive, calls, f"{naive / calls:.1f}x"])
    rows.append(["all", "", naive_total, unique_total, f"{naive_total / unique_total:.1f}x"])
    print(tabulate(rows, headers=["task", "queries", "inputs referenced", "encoder calls",
                                  "saved"]))


if __name__ == "__main__":
    main()
