"""The engine: each unique input encoded once, sides kept apart, bad encoders caught."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from mmeb_fixtures import colour_classification, colour_t2i, write_rows

from mmeb.engine import evaluate_task
from mmeb.errors import ModelError
from mmeb.items import Side
from mmeb.random_encoder import RandomEncoder
from mmeb.tasks import get_task


class CountingEncoder(RandomEncoder):
    """Random vectors, while counting every (side, input) it is asked to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()
        self.batches: list[int] = []

    def encode(self, items, *, side, task):
        self.batches.append(len(items))
        for item in items:
            self.calls[(side, item.key)] += 1
        return super().encode(items, side=side, task=task)


class ColourEncoder:
    """Knows colours: images by their pixel, texts by the colour word they contain."""

    name = "colour"
    COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")

    def encode(self, items, *, side, task):
        from mmeb_fixtures import RGB

        out = []
        for item in items:
            if (item.has_image and side == Side.QUERY) or (item.has_image and not item.text):
                pixel = item.image.getpixel((8, 8))
                name = min(RGB, key=lambda c: sum((a - b) ** 2
                                                  for a, b in zip(RGB[c], pixel, strict=True)))
            else:
                name = next(c for c in self.COLOURS if c in item.text)
            out.append(np.eye(len(self.COLOURS))[self.COLOURS.index(name)])
        return np.array(out)


def test_each_unique_input_is_encoded_exactly_once(tmp_path):
    task = colour_t2i(tmp_path, rows=16)  # 16 queries over 8 distinct captions, 8 images
    encoder = CountingEncoder()
    result = evaluate_task(encoder, task, data_dir=str(tmp_path), batch_size=3, progress=False)
    assert set(encoder.calls.values()) == {1}
    query_keys = {k for (side, k) in encoder.calls if side == Side.QUERY}
    target_keys = {k for (side, k) in encoder.calls if side == Side.TARGET}
    assert len(query_keys) == 8
    assert len(target_keys) == 8
    assert result.counts["unique_queries"] == 8
    assert result.counts["unique_candidates"] == 8
    assert result.counts["rows"] == 16
    assert max(encoder.batches) == 3


def test_a_correct_encoder_scores_one_on_both_modality_directions(tmp_path):
    for task in (colour_classification(tmp_path), colour_t2i(tmp_path)):
        result = evaluate_task(ColourEncoder(), task, data_dir=str(tmp_path), progress=False)
        assert result.metrics["hit@1"] == pytest.approx(1.0), task.name
        assert result.warnings == []


def test_constant_encoder_scores_chance_and_is_warned_about(tmp_path):
    class Constant:
        name = "constant"

        def encode(self, items, *, side, task):
            return np.ones((len(items), 4))

    task = colour_classification(tmp_path)
    result = evaluate_task(Constant(), task, data_dir=str(tmp_path), progress=False)
    assert result.metrics["hit@1"] == pytest.approx(1 / 8)
    assert result.chance == pytest.approx(1 / 8)
    assert any("chance level" in w for w in result.warnings)
    # The same vectors from a model that declares itself a random baseline: no warning.
    baseline = Constant()
    baseline.scores_chance = True
    quiet = evaluate_task(baseline, task, data_dir=str(tmp_path), progress=False)
    assert quiet.metrics == result.metrics
    assert quiet.warnings == []


def test_copies_of_the_gold_count_as_the_gold(tmp_path):
    """ImageNet has two 'crane' classes: a copy of the gold text is one candidate, not a rival."""
    task = get_task("ImageNet-1K")
    colour_classification(tmp_path, rows=2)
    write_rows(tmp_path, task.name, [{
        "qry_text": "<|image_1|>\nRepresent the given image for classification\n",
        "qry_img_path": "ImageNet-1K/image_0.jpg",
        "tgt_text": ["crane", "crane", "red", "blue"], "tgt_img_path": ["", "", "", ""],
    }])

    class Likes:
        name = "likes-crane"

        def encode(self, items, *, side, task):
            return np.array([[1.0, 0.0] if item.text in ("crane", "") else [0.0, 1.0]
                             for item in items])

    result = evaluate_task(Likes(), task, data_dir=str(tmp_path), progress=False)
    assert result.metrics["hit@1"] == pytest.approx(1.0)
    assert result.counts["duplicate_candidates_dropped"] == 1


def test_torch_tensors_are_accepted(tmp_path):
    torch = pytest.importorskip("torch")

    class TorchEncoder(RandomEncoder):
        def encode(self, items, *, side, task):
            return torch.from_numpy(super().encode(items, side=side, task=task)).to(torch.bfloat16)

    class RoundedEncoder(RandomEncoder):
        """The same vectors as numpy, rounded to bfloat16 the way torch rounds them."""

        def encode(self, items, *, side, task):
            vectors = torch.from_numpy(super().encode(items, side=side, task=task))
            return vectors.to(torch.bfloat16).float().numpy()

    task = colour_classification(tmp_path)
    result = evaluate_task(TorchEncoder(), task, data_dir=str(tmp_path), progress=False)
    expected = evaluate_task(RoundedEncoder(), task, data_dir=str(tmp_path), progress=False)
    assert result.counts["embedding_dim"] == expected.counts["embedding_dim"]
    assert result.metrics == expected.metrics


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda n: np.ones((n + 1, 4)), "returned shape"),
        (lambda n: np.ones(n), "returned shape"),
        (lambda n: np.full((n, 4), np.nan), "NaN"),
    ],
)
def test_malformed_encoder_output_is_a_clear_error(tmp_path, output, message):
    class Broken:
        name = "broken"

        def encode(self, items, *, side, task):
            return output(len(items))

    task = colour_classification(tmp_path)
    with pytest.raises(ModelError, match=message):
        evaluate_task(Broken(), task, data_dir=str(tmp_path), progress=False)


def test_model_without_the_needed_modality_is_refused(tmp_path):
    class TextOnly(RandomEncoder):
        modalities = frozenset({"text"})

    task = colour_classification(tmp_path)
    with pytest.raises(ModelError, match="cannot encode image query inputs of task ImageNet-1K"):
        evaluate_task(TextOnly(), task, data_dir=str(tmp_path), progress=False)


def test_limit_evaluates_the_first_rows(tmp_path):
    task = colour_classification(tmp_path, rows=12)
    result = evaluate_task(CountingEncoder(), task, data_dir=str(tmp_path), limit=5,
                           progress=False)
    assert result.counts["rows"] == 5
    assert result.counts["rows_in_data"] == 12
