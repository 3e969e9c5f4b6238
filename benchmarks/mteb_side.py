"""The mteb side of bench_mteb.py: run by the interpreter of mteb's own environment.

    python mteb_side.py DATA_DIR CACHE_DIR SCORES_JSON [--ms 4] [--batch-size 32]

Evaluates the probe encoder (probe.py, the same work per item as in `mmeb run`) on the MMEB-format
suite of perfdata.py, expressed as mteb 2.x custom retrieval tasks: one task per MMEB task, the
queries as they are, the corpus the task's candidate pool (every row's candidates are the whole
pool, so ranking a row's candidates is retrieval over that pool). Nothing is downloaded: the
tasks load the parquet file and the JPEGs from DATA_DIR. The probe's totals go to $PROBE_STATS at
exit, as in `mmeb run`; the tasks' scores and mteb's own phase timings to SCORES_JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mteb
import numpy as np
import pyarrow.parquet as pq
from datasets import Dataset, Image
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe import Probe

from mmeb.items import Item, Side

# mteb's task category: query modalities "2" document modalities (i = image, t = text).
CATEGORIES = {"ImageNet-1K": "i2t", "N24News": "it2t", "MSCOCO_t2i": "t2i",
              "VisualNews_i2t": "i2t", "CIRR": "it2i"}


def _split(data: Path, name: str) -> RetrievalSplitData:
    """One MMEB task as mteb's queries / corpus / relevant_docs (the gold is each row's first
    candidate). Besides the modality columns, each record carries ``raw``, the MMEB string, which
    mteb passes through to the batches untouched: the probe's vectors depend on it, as in mmeb."""
    table = pq.read_table(next((data / name).glob("*.parquet"))).to_pydict()
    root = os.path.realpath(data / "eval_images")

    def path(rel: str) -> str | None:  # the path string mmeb gives the encoder
        return os.path.normpath(os.path.join(root, rel)) if rel else None

    query_mods, doc_mods = CATEGORIES[name].split("2")
    doc_ids: dict[tuple[str, str], str] = {}
    for texts, rels in zip(table["tgt_text"], table["tgt_img_path"], strict=True):
        for key in zip(texts, rels, strict=True):
            doc_ids.setdefault(key, f"d{len(doc_ids)}")

    def records(pairs: list[tuple[str, str]], ids: list[str], mods: str) -> Dataset:
        columns: dict[str, list[Any]] = {"id": ids, "raw": [raw for raw, _ in pairs]}
        if "t" in mods:
            columns["text"] = [raw for raw, _ in pairs]
        if "i" in mods:
            columns["image"] = [path(rel) for _, rel in pairs]
        dataset = Dataset.from_dict(columns)
        # Paths stored, decoded on access (datasets' Image feature), as mteb's Hub datasets are.
        return dataset.cast_column("image", Image()) if "i" in mods else dataset

    pairs = list(zip(table["qry_text"], table["qry_img_path"], strict=True))
    query_ids = [f"q{i}" for i in range(len(pairs))]
    return RetrievalSplitData(
        queries=records(pairs, query_ids, query_mods),
        corpus=records(list(doc_ids), list(doc_ids.values()), doc_mods),
        relevant_docs={q: {doc_ids[(texts[0], rels[0])]: 1} for q, texts, rels in
                       zip(query_ids, table["tgt_text"], table["tgt_img_path"], strict=True)},
        top_ranked=None,
    )


def make_task(data: Path, name: str) -> AbsTaskRetrieval:
    metadata = TaskMetadata(
        name=f"MMEBBench-{name}", description=f"{name} in MMEB format, read from disk.",
        reference=None, dataset={"path": str(data / name), "revision": "local"},
        type="Any2AnyRetrieval", category=CATEGORIES[name], modalities=["image", "text"],
        eval_splits=["test"], eval_langs=["eng-Latn"], main_score="hit_rate_at_1",
        date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
        dialect=None, sample_creation=None, bibtex_citation=None)

    class Task(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:  # noqa: ARG002
            # Replaces the Hub loader (RetrievalDatasetLoader) of AbsTaskRetrieval.
            self.dataset = {"default": {"test": _split(data, name)}}
            self.data_loaded = True

    Task.metadata = metadata
    return Task()


class ProbeModel(AbsEncoder):
    """mteb's encoder protocol around probe.py's Probe: each batch's images come decoded by the
    DataLoader (datasets' Image feature); the probe reads each item's image, then does its fixed
    work per item, exactly as under `mmeb run`."""

    def __init__(self, ms: float) -> None:
        self.probe = Probe(ms=ms)
        self.mteb_model_meta = ModelMeta.create_empty(overwrites={
            "name": "mmeb-bench/probe", "revision": "1", "modalities": ["image", "text"],
            "similarity_fn_name": ScoringFunction.COSINE, "framework": []})

    def encode(self, inputs: Any, *, task_metadata: TaskMetadata, hf_split: str,  # noqa: ARG002
               hf_subset: str, prompt_type: PromptType | None = None,  # noqa: ARG002
               **kwargs: Any) -> np.ndarray:  # noqa: ARG002
        side = Side.QUERY if prompt_type == PromptType.query else Side.TARGET
        out = []
        for batch in inputs:
            images = batch.get("image") or [None] * len(batch["raw"])
            # image.filename: the path PIL opened, i.e. the one mmeb passes (vector identity).
            items = [Item(raw=raw, text="", image_path=getattr(image, "filename", None),
                          decoded=image) for raw, image in zip(batch["raw"], images, strict=True)]
            out.append(self.probe.encode(items, side=side, task=None))
        return np.concatenate(out)


def main() -> None:
    # $BENCH_START: when the parent started this process (interpreter start-up and imports)
    startup_s = time.time() - float(os.environ.get("BENCH_START", "nan"))
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("scores", type=Path)
    parser.add_argument("--ms", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tasks", default=",".join(CATEGORIES))
    args = parser.parse_args()
    main_start = time.perf_counter()
    tasks = [make_task(args.data, name) for name in args.tasks.split(",")]
    evaluate_start = time.perf_counter()
    # A fresh result cache per run (as mmeb gets a fresh output folder): results are written, and
    # nothing is skipped as already computed.
    result = mteb.evaluate(ProbeModel(args.ms), tasks, cache=mteb.ResultCache(args.cache),
                           overwrite_strategy="always", show_progress_bar=False,
                           encode_kwargs={"batch_size": args.batch_size,
                                          "show_progress_bar": False}, co2_tracker=False)
    evaluate_s = time.perf_counter() - evaluate_start
    # mteb's own phase timings, summed over the tasks (evaluate() does not hand a timer down
    # to the tasks; each task result keeps its phases).
    phases: dict[str, float] = defaultdict(float)
    for task_result in result.task_results:
        for phase in task_result.evaluation_phases or []:
            phases[phase["name"]] += phase["end"] - phase["start"]
    scores = {t.task_name.removeprefix("MMEBBench-"): t.scores["test"][0]
              for t in result.task_results}
    versions = {name: version(name) for name in
                ("mteb", "datasets", "torch", "transformers", "sentence-transformers")}
    args.scores.write_text(json.dumps({
        "scores": scores, "versions": versions, "startup_s": startup_s, "evaluate_s": evaluate_s,
        "main_s": time.perf_counter() - main_start, "phases_s": phases}, indent=1))


if __name__ == "__main__":
    main()
