"""``vlm2vec tiny``: the one command that rebuilds the packaged ``vlm2vec-tiny`` model.

1. the sample suite's cached copy (seed 0, small), generated if missing;
2. a random tiny Qwen2-VL with a tokenizer fitted to its training texts (:mod:`vlm2vec.tiny`);
3. ``vlm2vec train`` once per stage (:data:`STAGES`), each from the previous one's output:
   ``configs/vlm2vec-tiny-vision.yaml`` (the image side, on image -> image pairs),
   ``configs/vlm2vec-tiny.yaml`` (every task in every batch),
   ``configs/vlm2vec-tiny-by-task.yaml`` (every batch from one task), then
   ``configs/vlm2vec-tiny-anneal.yaml`` (the same at half the rate, in a new order); any
   ``--key value`` flag applies to every stage. A rerun into the same ``--out`` reuses each
   finished stage whose config and inputs are unchanged (:func:`finished_with`);
4. the shippable folder ``<out>/vlm2vec-tiny``: the trained model's files and a
   ``manifest.json`` with their SHA-256, the training summary, the model's hit@1 on every
   sample task (evaluated as ``mmeb run`` does) and the train/eval overlap;
   with ``--install``, the same files replace the packaged copy in a source checkout.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("vlm2vec")

#: The files ``mmeb run --model vlm2vec-tiny`` reads, copied from the trained folder.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "preprocessor_config.json", "generation_config.json")


#: The recipe's stages in order: (output folder under ``--out``, committed config file).
STAGES = (("vision", "vlm2vec-tiny-vision.yaml"), ("train", "vlm2vec-tiny.yaml"),
          ("by-task", "vlm2vec-tiny-by-task.yaml"), ("anneal", "vlm2vec-tiny-anneal.yaml"))


def _config_file(name: str) -> Path:
    return Path(__file__).resolve().parent / "configs" / name


def recipe_config() -> Path:
    """The main stage's config (every task mixed in every batch); its header describes the
    recipe."""
    return _config_file("vlm2vec-tiny.yaml")


def stage_configs() -> list[Path]:
    """The committed config of every stage, in training order."""
    return [_config_file(name) for _, name in STAGES]


#: Config keys that do not change the trained model: the display switch and the worker count
#: (the same batches either way).
NO_EFFECT = ("progress", "data_workers")


def recorded_config(config: Any) -> dict[str, Any]:
    """A stage's training config as the manifest records it: without the paths of one build
    and the keys of :data:`NO_EFFECT`, so the same recipe records the same config anywhere."""
    from vlm2vec.config import to_dict

    return {k: v for k, v in to_dict(config).items()
            if k not in ("checkpoint", "output_dir", *NO_EFFECT)}


def finished_with(config: Any, data: Path) -> bool:
    """Whether ``config.output_dir`` holds a finished training run of ``config`` on the
    training pairs under ``data``: its ``summary.json`` (written last) records the same
    settings, paths included, up to the keys of :data:`NO_EFFECT`, and the same data folder
    (which names the sample suite's version)."""
    from vlm2vec.config import to_dict

    summary = Path(config.output_dir) / "summary.json"
    if not summary.is_file():
        return False
    recorded = json.loads(summary.read_text())
    ran = recorded.get("config")
    # Through JSON, as the summary stored it (tuples become lists).
    wanted = json.loads(json.dumps(to_dict(config)))

    def effective(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in NO_EFFECT}

    return (isinstance(ran, dict)
            and recorded.get("data_source", {}).get("folder") == str(data)
            and effective(ran) == effective(wanted))


def rebuild(out: Path, flags: list[str], *, install: bool = False,
            limit: int | None = None) -> Path:
    """Run the recipe into ``out``; returns the shippable folder. ``limit`` evaluates only the
    first queries of each sample task (a quick check; the shipped scores use all)."""
    from mmeb.models.vlm2vec_tiny import MANIFEST, file_digests, packaged_folder
    from mmeb.sample import ensure_sample
    from vlm2vec.config import build_config
    from vlm2vec.tiny import build_initial, overlap_report, training_texts

    root = ensure_sample()
    # A bad flag fails before anything is built.
    first, *_ = [build_config(path, flags) for path in stage_configs()]
    init = out / "init"
    before = file_digests(init) if init.is_dir() else None
    build_initial(init, training_texts(root), seed=first.seed)
    from vlm2vec.trainer import train

    # A stage is reused only while every input it read is unchanged: the starting checkpoint
    # (deterministic, compared file by file) and each earlier stage (reused, not retrained).
    reusable = before == file_digests(init)
    configs: list[Any] = []
    checkpoint = init
    for folder, name in STAGES:
        config = build_config(_config_file(name), flags, overrides={
            "checkpoint": str(checkpoint), "output_dir": str(out / folder)})
        reusable = reusable and finished_with(config, root / "train")
        if reusable:
            log.info("%s: reusing the finished run of the same config", out / folder)
        else:
            if (out / folder).exists():
                shutil.rmtree(out / folder)  # a stopped or stale stage of this recipe
            train(config)
        configs.append(config)
        checkpoint = out / folder
    trained = checkpoint
    ship = out / "vlm2vec-tiny"
    if ship.exists():
        shutil.rmtree(ship)
    ship.mkdir(parents=True)
    for name in MODEL_FILES:
        if (trained / name).is_file():
            shutil.copy2(trained / name, ship / name)
    summaries = [json.loads((out / folder / "summary.json").read_text())
                 for folder, _ in STAGES]
    scores = evaluate_on_sample(ship, out / "eval", limit)
    manifest: dict[str, Any] = {
        "model": "vlm2vec-tiny",
        "recipe": f"vlm2vec tiny {' '.join(flags)}".strip(),
        "sample_suite": root.name,
        "training": [{k: s[k] for k in ("steps", "final_loss", "pairs", "seconds")}
                     for s in summaries],
        "config": [recorded_config(c) for c in configs],
        "sample_scores": scores,
        "sample_scores_limit": limit,
        "train_eval_overlap": overlap_report(root),
        "sha256": file_digests(ship),
    }
    (ship / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("shippable model: %s", ship)
    if install:
        target = packaged_folder()
        target.mkdir(parents=True, exist_ok=True)
        for path in target.iterdir():
            path.unlink()
        for path in ship.iterdir():
            shutil.copy2(path, target / path.name)
        log.info("installed into %s", target)
    return ship


def evaluate_on_sample(folder: Path, results: Path, limit: int | None = None
                       ) -> dict[str, float]:
    """hit@1 of the model in ``folder`` on every sample task, as ``mmeb run`` computes it."""
    from mmeb.registry import load_model
    from mmeb.runner import evaluate

    if results.exists():
        shutil.rmtree(results)
    encoder = load_model("vlm2vec-tiny", checkpoint=str(folder), device="cpu")
    outcome = evaluate(encoder, split="sample", output_dir=results, progress=False, limit=limit)
    scores = {d["task"]: round(float(d["metrics"]["hit@1"]), 6) for d in outcome.results}
    log.info("sample suite hit@1: mean %.3f", sum(scores.values()) / len(scores))
    return scores
