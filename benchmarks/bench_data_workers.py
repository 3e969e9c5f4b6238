"""Training steps per second with the next batches built by worker processes (``data_workers``).

Runs the vlm2vec-tiny recipe's second stage (``vlm2vec/configs/vlm2vec-tiny.yaml``: all twelve
sample tasks, 64 pairs plus their hard negatives a step) from a freshly written random tiny
checkpoint, once per worker count, and checks that every run logs the same losses (the batches
must not change). Reports the median seconds per step after the first few (start-up excluded)
and the speed-up over 0 workers.

    python benchmarks/bench_data_workers.py [--steps 60] [--workers 0,1,2] [--threads N]

Workers help where cores are spare: with the model's arithmetic elsewhere (a GPU) or on fewer
threads than the machine has cores. On a machine whose every core already runs the model's
threads, a worker takes its time from them.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the training process (0: torch's default); "
                             "1 leaves a core of a 2-core machine to one worker")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmeb-bench-data-workers"))
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from mmeb.sample import ensure_sample
    from vlm2vec.config import build_config
    from vlm2vec.recipe import recipe_config
    from vlm2vec.tiny import build_initial, training_texts
    from vlm2vec.trainer import train

    init = build_initial(args.work / "init", training_texts(ensure_sample()))
    results: dict[str, float] = {}
    reference: list[float] | None = None
    for workers in (int(w) for w in args.workers.split(",")):
        out = args.work / f"workers-{workers}"
        config = build_config(recipe_config(), [
            "--max_steps", str(args.steps), "--save_steps", "0",
            "--data_workers", str(workers)],
            overrides={"checkpoint": str(init), "output_dir": str(out)})
        train(config)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in rows]
        if reference is None:
            reference = losses
        elif losses != reference:
            raise SystemExit(f"data_workers {workers}: the losses differ from the first run's")
        per_step = [config.global_batch_size / r["samples_per_s"] for r in rows[5:]]
        results[str(workers)] = statistics.median(per_step)
    base = results[next(iter(results))]
    print(json.dumps({"steps": args.steps, "threads": args.threads or "default",
                      "seconds_per_step": results,
                      "speedup": {w: round(base / s, 2) for w, s in results.items()},
                      "losses_equal": True}))


if __name__ == "__main__":
    main()
