"""Random shifts of training pictures (``augment_shift``): what moves, what stays, and that the
trainer's draws are reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vlm2vec_fixtures import losses, quick, small_suite, weights

from vlm2vec.augment import shift, shift_pairs
from vlm2vec.config import ConfigError, build_config
from vlm2vec.data import Input, Pair
from vlm2vec.model import ToyEmbedder
from vlm2vec.trainer import train
from vlm2vec.vlm_model import as_item

BACKGROUND = (200, 210, 220)


def dot_picture(y: int, x: int, side: int = 16) -> Image.Image:
    pixels = np.full((side, side, 3), BACKGROUND, dtype=np.uint8)
    pixels[y, x] = (255, 0, 0)
    return Image.fromarray(pixels)


def where_is_the_dot(picture: Image.Image) -> tuple[int, int]:
    red = np.argwhere(np.asarray(picture)[..., 1] == 0)
    assert len(red) == 1, red
    return int(red[0][0]), int(red[0][1])


def test_a_shift_moves_the_content_within_the_bound_and_fills_with_the_edge() -> None:
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(300):
        moved = shift(dot_picture(8, 8), 3, rng)
        assert moved.size == (16, 16)
        y, x = where_is_the_dot(moved)
        assert abs(y - 8) <= 3
        assert abs(x - 8) <= 3
        offsets.add((y - 8, x - 8))
        # Everything but the dot is the plain background, the uncovered border included.
        others = np.asarray(moved).reshape(-1, 3)
        assert (others == BACKGROUND).all(axis=1).sum() == 16 * 16 - 1
    assert len(offsets) == 49  # every offset in [-3, 3] x [-3, 3] is drawn


def test_a_zero_shift_leaves_the_picture_alone() -> None:
    picture = dot_picture(2, 5)
    assert shift(picture, 0, np.random.default_rng(0)) is picture


def test_pairs_get_their_pictures_shifted_and_keep_their_files(tmp_path: Path) -> None:
    for name, (y, x) in {"q.png": (4, 4), "n.png": (10, 12)}.items():
        dot_picture(y, x).save(tmp_path / name)
    pair = Pair(Input("<|image_1|> a query", str(tmp_path / "q.png"), "row 0 query"),
                Input("a caption", None, "row 0 target"),
                Input("<|image_1|> other", str(tmp_path / "n.png"), "row 0 negative"))
    first = shift_pairs([pair], 4, np.random.default_rng(7))[0]
    again = shift_pairs([pair], 4, np.random.default_rng(7))[0]
    assert first.target == pair.target
    assert first.target.pixels is None  # text only: nothing to shift
    assert first.query.image == pair.query.image  # duplicate masking still names the file
    assert first.negative is not None
    assert again.negative is not None
    for shifted, repeated, original in ((first.query, again.query, pair.query),
                                        (first.negative, again.negative, pair.negative)):
        assert shifted.pixels is not None
        assert np.array_equal(np.asarray(shifted.pixels), np.asarray(repeated.pixels))
        with Image.open(str(original.image)) as file:
            assert shifted.pixels.size == file.size
    # The VLM adapters read the shifted copy, not the file.
    assert as_item(first.query).image is first.query.pixels
    assert as_item(pair.query).image is not None


def test_the_toy_model_reads_the_shifted_copy(tmp_path: Path) -> None:
    dot_picture(8, 8).save(tmp_path / "p.png")
    inp = Input("<|image_1|> x", str(tmp_path / "p.png"))
    moved = shift_pairs([Pair(inp, inp, None)], 5, np.random.default_rng(2))[0].query
    assert moved.pixels is not None
    assert where_is_the_dot(moved.pixels) != (8, 8)  # this draw moves it
    model = ToyEmbedder(dim=8, vocab=64, image_size=16, channels=4)
    for item, picture in ((inp, dot_picture(8, 8)), (moved, moved.pixels)):
        green = model.collate([item], "query")["images"][0, 1].numpy()
        assert tuple(np.argwhere(green == 0)[0]) == where_is_the_dot(picture)


def test_a_negative_shift_is_refused() -> None:
    with pytest.raises(ConfigError, match="augment_shift must be >= 0"):
        build_config(overrides={"augment_shift": -1})


def test_shifted_training_is_reproducible_and_differs_from_plain(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    suite = small_suite(tmp_path_factory)
    runs = {}
    for name, amount in (("a", 4), ("b", 4), ("plain", 0)):
        out = tmp_path / name
        train(build_config(overrides=quick(suite / "train", out, max_steps=3,
                                           augment_shift=amount)))
        runs[name] = (losses(out), weights(out))
    assert runs["a"][0] == runs["b"][0]
    assert all(np.array_equal(runs["a"][1][k].numpy(), runs["b"][1][k].numpy())
               for k in runs["a"][1])
    assert runs["a"][0] != runs["plain"][0]
