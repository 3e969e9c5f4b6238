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
        assert side in ("query", "target") and task.name in ("ImageNet-1K", "MSCOCO_t2i")
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
