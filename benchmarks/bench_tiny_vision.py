"""What the vlm2vec-tiny vision tower can learn to see, trained alone on one sample task.

The packaged model is weakest where a picture must be read closely (Sample-Shapes, -Words). This
script separates the image side from the rest of the recipe: it trains only the tiny Qwen2-VL
vision tower (random weights, the geometry of ``vlm2vec.tiny.TinyShape``) plus a linear head as
a plain classifier on the task's training pictures (cross-entropy over its class names, the
merged image tokens mean-pooled), and scores the eval pictures. No text side, no contrastive
loss: what the tower does not reach under this direct objective, the full model is unlikely to
reach. ``--cnn`` trains a small convolutional network on the same pictures, labels and steps
instead, as a reference for how hard the task is to see at all.

    python benchmarks/bench_tiny_vision.py [--task Sample-Shapes] [--steps 1200] [--lr 2e-3]
    python benchmarks/bench_tiny_vision.py --shape patch_size=8,merge_size=4   # also cell-aligned
    python benchmarks/bench_tiny_vision.py --shape patch_size=14,image_side=112,vision_init_std=0.02
    python benchmarks/bench_tiny_vision.py --cnn --steps 400
    python benchmarks/bench_tiny_vision.py --train-pairs 16000   # more training pictures
    python benchmarks/bench_tiny_vision.py --shift 8

``--train-pairs N`` generates the task with N training pairs (seed 0, into ``--work``) and trains
on them; its first 2000 are the suite's. The eval queries are always the sample suite's (the
generated copy's are byte-identical: the generator draws them first, whatever N is). ``--shift N``
moves every training picture by up to N pixels, drawn anew each step (``vlm2vec.augment``, as
the trainer's ``augment_shift``).

Needs the sample suite (generated on first use). Prints one JSON line: accuracy on the first
500 training pictures and on all eval queries, the final batch loss, seconds and parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rows(train_root: Path, task: str) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(picture, class name) of the training pairs (MMEB-train rows under ``train_root``) and of
    the eval queries (the sample suite's; their gold candidate comes first)."""
    from mmeb.data import load_task_inputs
    from mmeb.tasks import get_task
    from vlm2vec.data import read_subsets

    (subset,), _ = read_subsets(str(train_root), [task], "original", None)
    train = [(Path(str(image)), label) for image, label in zip(subset.qry_image, subset.pos,
                                                                strict=True)]
    inputs, _ = load_task_inputs(get_task(task))
    test = [(Path(str(inputs.queries[q].image_path)), inputs.targets[gold].raw)
            for q, gold in zip(inputs.query_index, inputs.candidates[:, 0], strict=True)]
    return train, test


def pictures(paths: list[Path], max_shift: int = 0,
             rng: np.random.Generator | None = None) -> list[Any]:
    """The pictures as RGB images, each moved by ``vlm2vec.augment.shift`` when ``max_shift``."""
    from mmeb.items import load_image
    from vlm2vec.augment import shift

    out = [load_image(str(p)) for p in paths]
    if not max_shift:
        return out
    assert rng is not None
    return [shift(picture, max_shift, rng) for picture in out]


class VisionClassifier(torch.nn.Module):
    """The tiny model's vision tower (patches, blocks, merger) and a linear head."""

    def __init__(self, shape: Any, classes: int) -> None:
        super().__init__()
        import transformers as tf

        from vlm2vec.tiny import build_tokenizer, image_processor_config, model_config

        tokenizer = build_tokenizer(["a"])
        model = tf.Qwen2VLForConditionalGeneration(model_config(shape, len(tokenizer), tokenizer))
        self.tower = model.model.visual
        self.head = torch.nn.Linear(shape.hidden_size, classes)
        options = {k: v for k, v in image_processor_config(shape).items()
                   if k not in ("image_processor_type", "processor_class")}
        self.processor = tf.Qwen2VLImageProcessor(**options)

    def prepare(self, paths: list[Path], max_shift: int = 0,
                rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.processor(images=pictures(paths, max_shift, rng), return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def forward(self, data: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor
                ) -> torch.Tensor:
        pixels, grid = data
        per = pixels.shape[0] // grid.shape[0]  # every picture has the same patch grid
        patches = (index[:, None] * per + torch.arange(per)).reshape(-1)
        out = self.tower(pixels[patches], grid_thw=grid[index])
        # Newer transformers return an output object (merged tokens in pooler_output).
        tokens = getattr(out, "pooler_output", out)
        return self.head(tokens.view(len(index), -1, tokens.shape[-1]).mean(1))


class ConvClassifier(torch.nn.Module):
    """Three 3x3 convolutions with pooling over 96-pixel pictures: the reference."""

    def __init__(self, classes: int, width: int = 32) -> None:
        super().__init__()
        c = width
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(c, 2 * c, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(2 * c, 2 * c, 3, padding=1), torch.nn.GELU(),
            torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2 * c, classes))

    def prepare(self, paths: list[Path], max_shift: int = 0,
                rng: np.random.Generator | None = None) -> torch.Tensor:
        resized = [np.asarray(p.resize((96, 96))) for p in pictures(paths, max_shift, rng)]
        return torch.tensor(np.stack(resized)).permute(0, 3, 1, 2).float() / 255

    def forward(self, data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.net(data[index])


def parse_shape(text: str) -> Any:
    from vlm2vec.tiny import TinyShape

    kinds = {f.name: float if f.type in (float, "float") else int
             for f in dataclasses.fields(TinyShape)}
    values: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in kinds:
            raise SystemExit(f"--shape: unknown TinyShape field {key!r}; fields: "
                             + ", ".join(kinds))
        values[key] = kinds[key](value)
    return TinyShape(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="Sample-Shapes")
    parser.add_argument("--shape", default="",
                        help="TinyShape fields, e.g. patch_size=7,merge_size=4")
    parser.add_argument("--cnn", action="store_true", help="train the convolutional reference")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-pairs", type=int, default=0,
                        help="generate the task with this many training pairs (0: the suite's)")
    parser.add_argument("--shift", type=int, default=0,
                        help="move every training picture by up to this many pixels, drawn "
                             "anew each step (vlm2vec.augment.shift)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmeb-bench-tiny-vision"))
    args = parser.parse_args()

    from mmeb.sample import ensure_sample

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    root = ensure_sample()
    if args.train_pairs:
        from mmeb.sample.generate import generate
        from mmeb.sample.spec import MANIFEST

        root = args.work / f"{args.task}-{args.train_pairs}"
        if not (root / MANIFEST).is_file():  # written last: a complete copy has it
            generate(root, seed=0, tasks=[args.task], train_pairs=args.train_pairs)
    train, test = rows(root / "train", args.task)
    classes = sorted({c for _, c in train} | {c for _, c in test})
    shape = parse_shape(args.shape)
    model: Any = ConvClassifier(len(classes)) if args.cnn else VisionClassifier(shape, len(classes))
    x_train, x_test = model.prepare([p for p, _ in train]), model.prepare([p for p, _ in test])
    number = {c: i for i, c in enumerate(classes)}
    y_train = torch.tensor([number[c] for _, c in train])
    y_test = torch.tensor([number[c] for _, c in test])
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    start = time.perf_counter()
    loss = torch.tensor(float("nan"))
    rng = np.random.default_rng(args.seed)
    for _ in range(args.steps):
        index = torch.randint(0, len(train), (args.batch,))
        if args.shift:  # fresh shifts of this batch's pictures
            batch = model.prepare([train[i][0] for i in index.tolist()], args.shift, rng)
            logits = model(batch, torch.arange(args.batch))
        else:
            logits = model(x_train, index)
        loss = torch.nn.functional.cross_entropy(logits, y_train[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start

    def accuracy(data: Any, labels: torch.Tensor, n: int) -> float:
        with torch.no_grad():
            guesses = torch.cat([model(data, torch.arange(i, min(i + 100, n))).argmax(1)
                                 for i in range(0, n, 100)])
        return round(float((guesses == labels[:n]).float().mean()), 4)

    print(json.dumps({
        "task": args.task, "train_pairs": len(train),
        "model": "cnn" if args.cnn else "qwen2vl-vision",
        "shape": None if args.cnn else dataclasses.asdict(shape),
        "params": sum(p.numel() for p in model.parameters()),
        "steps": args.steps, "lr": args.lr, "shift": args.shift,
        "final_loss": round(float(loss.detach()), 4),
        "seconds": round(seconds, 1), "chance": round(1 / len(classes), 4),
        "train_accuracy": accuracy(x_train, y_train, min(500, len(train))),
        "eval_accuracy": accuracy(x_test, y_test, len(test)),
    }))


if __name__ == "__main__":
    main()
