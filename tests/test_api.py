"""The Python entry point a third party uses: mmeb.evaluate(encoder, ...)."""

from __future__ import annotations

import numpy as np
import pytest
from mmeb_fixtures import colour_classification, colour_t2i

import mmeb


class MyEncoder:
    """Written the way the README shows: only `name` and `encode`."""

    name = "my-encoder"

    def encode(self, items, *, side, task):
        assert side in ("query", "target")
        assert task.name in ("ImageNet-1K", "MSCOCO_t2i")
        vectors = []
        for item in items:
            colour = np.zeros(3)
            if item.image is not None:
                colour = np.asarray(item.image.getpixel((0, 0)), dtype=float)
            for i, word in enumerate(("red", "green", "blue")):
                if word in item.text or word in item.raw:
                    colour[i] += 255
            vectors.append(colour + 1.0)
        return np.stack(vectors)


def test_evaluate_an_encoder_object(tmp_path):
    colour_classification(tmp_path / "data")
    colour_t2i(tmp_path / "data")
    outcome = mmeb.evaluate(MyEncoder(), tasks=["ImageNet-1K", "MSCOCO_t2i"],
                            output_dir=tmp_path / "results", data_dir=str(tmp_path / "data"),
                            progress=False)
    assert outcome.computed == ["ImageNet-1K", "MSCOCO_t2i"]
    assert (tmp_path / "results" / "my-encoder" / "MSCOCO_t2i.json").exists()
    summary = outcome.summary
    assert summary.num_tasks == 2
    assert summary.overall == pytest.approx(np.mean(list(summary.per_task.values())))
    assert "overall (2 tasks)" in outcome.table()
    assert isinstance(MyEncoder(), mmeb.Encoder)


class CountingEncoder(MyEncoder):
    name = "counting"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode(self, items, *, side, task):
        self.calls.append(task.name)
        return super().encode(items, side=side, task=task)


def test_evaluate_resumes_from_the_result_folder(tmp_path):
    colour_classification(tmp_path / "data")
    colour_t2i(tmp_path / "data")
    options = {"output_dir": tmp_path / "results", "data_dir": str(tmp_path / "data"),
               "progress": False}
    first_encoder = CountingEncoder()
    first = mmeb.evaluate(first_encoder, tasks=["ImageNet-1K"], **options)
    assert first.computed == ["ImageNet-1K"]
    assert set(first_encoder.calls) == {"ImageNet-1K"}

    encoder = CountingEncoder()
    resumed = mmeb.evaluate(encoder, tasks=["ImageNet-1K", "MSCOCO_t2i"], **options)
    assert resumed.skipped == ["ImageNet-1K"]
    assert resumed.computed == ["MSCOCO_t2i"]
    assert set(encoder.calls) == {"MSCOCO_t2i"}
    assert resumed.summary.per_task["ImageNet-1K"] == first.summary.per_task["ImageNet-1K"]

    again = CountingEncoder()
    repeat = mmeb.evaluate(again, tasks=["ImageNet-1K", "MSCOCO_t2i"], **options)
    assert repeat.computed == []
    assert again.calls == []
    assert repeat.table() == resumed.table()
