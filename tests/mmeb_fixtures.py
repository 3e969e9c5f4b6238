"""MMEB-eval v1 fixtures written in the exact schema: parquet per task + JPEG images."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmeb.instructions import compose
from mmeb.tasks import TaskSpec, get_task

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
RGB = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220),
       "yellow": (230, 220, 30), "purple": (140, 30, 160), "orange": (240, 140, 20),
       "white": (245, 245, 245), "black": (10, 10, 10)}

SCHEMA = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                    ("tgt_text", pa.list_(pa.string())), ("tgt_img_path", pa.list_(pa.string()))])


def write_rows(data_dir: Path, task: str, rows: list[dict], schema: pa.Schema = SCHEMA) -> Path:
    folder = data_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_image(data_dir: Path, rel: str, color: str, size: int = 16) -> None:
    path = data_dir / "eval_images" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), RGB[color]).save(path, quality=95)


def colour_classification(data_dir: Path, task: TaskSpec | None = None, rows: int = 12) -> TaskSpec:
    """An ImageNet-1K-shaped task: image query, class-name candidates (gold first)."""
    task = task or get_task("ImageNet-1K")
    records = []
    for i in range(rows):
        gold = COLORS[i % len(COLORS)]
        rel = f"{task.name}/image_{i}.jpg"
        write_image(data_dir, rel, gold)
        others = [c for c in COLORS if c != gold]
        records.append({
            "qry_text": compose(task.query_instruction, "", has_image=True),
            "qry_img_path": rel,
            "tgt_text": [gold, *others],
            "tgt_img_path": [""] * len(COLORS),
        })
    write_rows(data_dir, task.name, records)
    return task


def colour_t2i(data_dir: Path, task: TaskSpec | None = None, rows: int = 8) -> TaskSpec:
    """A MSCOCO_t2i-shaped task: text query, image candidates with the target instruction."""
    task = task or get_task("MSCOCO_t2i")
    for color in COLORS:
        write_image(data_dir, f"{task.name}/{color}.jpg", color)
    records = []
    for i in range(rows):
        gold = COLORS[i % len(COLORS)]
        order = [gold, *[c for c in COLORS if c != gold]]
        records.append({
            "qry_text": compose(task.query_instruction, f"a plain {gold} square", has_image=False),
            "qry_img_path": "",
            "tgt_text": [compose(task.target_instruction, "", has_image=True)] * len(order),
            "tgt_img_path": [f"{task.name}/{c}.jpg" for c in order],
        })
    write_rows(data_dir, task.name, records)
    return task


#: The two fixture tasks the CLI tests run (see ``two_task_data``).
TASKS = "ImageNet-1K,MSCOCO_t2i"


def two_task_data(data_dir: Path) -> Path:
    """An ImageNet-1K- and a MSCOCO_t2i-shaped task under ``data_dir``."""
    colour_classification(data_dir)
    colour_t2i(data_dir)
    return data_dir


def invoke(*args: str):  # -> click.testing.Result
    from click.testing import CliRunner

    from mmeb.cli import main

    return CliRunner().invoke(main, list(args))


def run_args(data_dir: Path, out: Path, *extra: str, tasks: str = TASKS) -> list[str]:
    """``mmeb run`` over the fixture tasks, without progress bars."""
    return ["run", "--tasks", tasks, "--data-dir", str(data_dir), "--output-dir", str(out),
            "--no-progress", *extra]


def class_row(**over: object) -> dict:
    """One ImageNet-1K-shaped row (two class-name candidates), with fields overridden."""
    row = {"qry_text": "<|image_1|>\nRepresent the given image for classification\n",
           "qry_img_path": "ImageNet-1K/a.jpg", "tgt_text": ["red", "blue"],
           "tgt_img_path": ["", ""]}
    row.update(over)
    return row
