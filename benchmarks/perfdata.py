"""MMEB-format tasks for the performance benchmarks (written once, reused across runs).

Five real MMEB task names, each with ``rows`` unique queries whose candidate lists are the
whole of a pool of ``pool`` candidates (gold first, then the pool in a row-specific order),
as in MMEB's classification tasks. Image inputs are distinct JPEGs of noise, so decoding costs
what a photo of that size costs. The default shape gives 967 unique inputs:
4 x (100 + 93) + (100 + 95).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmeb.instructions import compose
from mmeb.tasks import get_task

TASKS = ("ImageNet-1K", "N24News", "MSCOCO_t2i", "VisualNews_i2t", "CIRR")
SCHEMA = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                    ("tgt_text", pa.list_(pa.string())), ("tgt_img_path", pa.list_(pa.string()))])


def _image(root: Path, rel: str, rng: np.random.Generator, size: int) -> str:
    path = root / "eval_images" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # Smooth noise: compresses like a photo (pure noise would be unrealistically slow).
    small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((size, size), Image.BILINEAR).save(path, quality=90)
    return rel


def write_suite(root: Path, *, rows: int = 100, pools: tuple[int, ...] = (93, 93, 93, 93, 95),
                image_size: int = 256, seed: int = 0, tasks: tuple[str, ...] = TASKS) -> Path:
    """Write (or reuse) the suite under ``root``; returns ``root`` (the --data-dir)."""
    stamp = {"rows": rows, "pools": list(pools), "image_size": image_size, "seed": seed,
             "tasks": list(tasks), "format": 1}
    marker = root / "suite.json"
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return root
    rng = np.random.default_rng(seed)
    for name, pool in zip(tasks, pools, strict=True):
        task = get_task(name)
        q_img, t_img = task.query_modality != "text", task.target_modality != "text"
        q_txt, t_txt = "text" in task.query_modality, "text" in task.target_modality
        cand_text = [compose(task.target_instruction, f"candidate {k} of {name}" if t_txt else "",
                             has_image=t_img) for k in range(pool)]
        cand_img = [_image(root, f"{name}/cand_{k}.jpg", rng, image_size) if t_img else ""
                    for k in range(pool)]
        records = []
        for i in range(rows):
            gold = i % pool
            order = [gold, *rng.permutation([k for k in range(pool) if k != gold]).tolist()]
            records.append({
                "qry_text": compose(task.query_instruction, f"query {i} of {name}" if q_txt else "",
                                    has_image=q_img),
                "qry_img_path": _image(root, f"{name}/query_{i}.jpg", rng, image_size)
                if q_img else "",
                "tgt_text": [cand_text[k] for k in order],
                "tgt_img_path": [cand_img[k] for k in order],
            })
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA),
                       folder / "test-00000-of-00001.parquet")
    marker.write_text(json.dumps(stamp))
    return root


def write_text_task(root: Path, *, rows: int, pool: int = 1000, per_row: int = 10,
                    name: str = "MSCOCO_i2t", seed: int = 0) -> Path:
    """One text-only task with ``rows`` unique queries and ``per_row`` candidates drawn from a
    pool (memory scaling: only the number of queries changes)."""
    stamp = {"rows": rows, "pool": pool, "per_row": per_row, "name": name, "seed": seed}
    marker = root / "suite.json"
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return root
    rng = np.random.default_rng(seed)
    cands = np.array([f"caption {k}" for k in range(pool)], dtype=object)
    picks = rng.integers(0, pool, (rows, per_row))
    offsets = np.arange(0, rows * per_row + 1, per_row, dtype=np.int32)
    table = pa.table({
        "qry_text": pa.array([f"Represent the given query {i}\n" for i in range(rows)]),
        "qry_img_path": pa.array([""] * rows),
        "tgt_text": pa.ListArray.from_arrays(offsets, pa.array(cands[picks.ravel()].tolist())),
        "tgt_img_path": pa.ListArray.from_arrays(offsets, pa.array([""] * (rows * per_row))),
    })
    (root / name).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / name / "test-00000-of-00001.parquet")
    (root / "eval_images").mkdir(exist_ok=True)
    marker.write_text(json.dumps(stamp))
    return root
