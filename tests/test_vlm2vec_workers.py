"""``data_workers``: the next steps' batches built in worker processes are the batches the
training process builds, so a run trains the same, step for step, with or without them."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_vlm import QWEN2VL, TOKENIZER_FILES
from vlm2vec_fixtures import losses, quick, small_suite, weights

from mmeb.errors import DataError
from vlm2vec.config import ConfigError, build_config
from vlm2vec.model import build_model
from vlm2vec.trainer import train


def run(overrides: dict[str, object]) -> tuple[list[tuple[int, float]], dict[str, torch.Tensor]]:
    train(build_config(overrides=overrides))
    out = Path(str(overrides["output_dir"]))
    return losses(out), weights(out)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_toy_training_is_the_same_with_workers(tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path) -> None:
    suite = small_suite(tmp_path_factory)
    # Shifts and GradCache chunks are built in the workers too.
    common = {"max_steps": 4, "augment_shift": 3, "gc_chunk_size": 5, "hard_negatives": True}
    here = run(quick(suite / "train", tmp_path / "here", **common))
    ahead = run(quick(suite / "train", tmp_path / "ahead", data_workers=2, **common))
    assert len(here[0]) == 4
    assert here[0] == ahead[0]
    assert_same(here[1], ahead[1])


def test_vlm_training_is_the_same_with_workers(tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path) -> None:
    suite = small_suite(tmp_path_factory)
    base = tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "model.safetensors", *TOKENIZER_FILES):
        if (QWEN2VL / name).is_file():
            shutil.copy2(QWEN2VL / name, base / name)

    def settings(out: str, **extra: object) -> dict[str, object]:
        return quick(suite / "train", tmp_path / out, model="qwen2vl-2b", checkpoint=str(base),
                     model_args={"image_resolution": "low"}, finetune="full",
                     global_batch_size=6, max_steps=2, learning_rate=5e-3, **extra)

    here = run(settings("here"))
    ahead = run(settings("ahead", data_workers=1))
    assert here[0] == ahead[0]
    assert_same(here[1], ahead[1])

    # What a spawned worker receives: the adapter's tokenizer and image processor, no weights.
    model = build_model(build_config(overrides=settings("unused")))
    collator = model.collator()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert len(pickle.dumps(collator)) < weight_bytes / 4


def test_an_unreadable_picture_fails_alike_in_a_worker(tmp_path_factory: pytest.TempPathFactory,
                                                       tmp_path: Path) -> None:
    suite = small_suite(tmp_path_factory)
    data = tmp_path / "data"
    shutil.copytree(suite / "train" / "Sample-Shapes", data / "Sample-Shapes")
    shutil.copytree(suite / "train" / "images" / "Sample-Shapes",
                    data / "images" / "Sample-Shapes")
    for picture in (data / "images").rglob("*.jpg"):
        picture.write_bytes(b"not a picture")
    messages = []
    for workers in (0, 1):
        # `exists` lets the run start; the pictures are read when a batch is built.
        with pytest.raises(DataError, match="cannot read image") as caught:
            train(build_config(overrides=quick(data, tmp_path / f"out{workers}",
                                               check_images="exists", data_workers=workers)))
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "\n" not in messages[0]


def test_a_negative_worker_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="data_workers must be >= 0"):
        build_config(overrides={"data_workers": -1})
