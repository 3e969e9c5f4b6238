"""BLIP-2 adapter: one Q-Former query token per image, matching Blip2ForImageTextRetrieval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import (
    BLIP2_QUERY_TOKENS,
    checkpoint,
    encode,
    image_item,
    text_item,
    write_images,
)

from mmeb.errors import ModelError
from mmeb.items import Side
from mmeb.metrics import l2_normalize as unit
from mmeb.registry import load_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = ["a photo of a cat", "what is it?", "the red car shown in the news " * 12]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint("blip2", tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def library(tiny: Path, images: list[Path]) -> tuple:
    """The model's own contrastive forward on the same inputs."""
    from PIL import Image

    model = transformers.Blip2ForImageTextRetrieval.from_pretrained(tiny).eval()
    processor = transformers.AutoProcessor.from_pretrained(tiny)
    with torch.no_grad():
        pixels = processor.image_processor([Image.open(p).convert("RGB") for p in images],
                                           return_tensors="pt")["pixel_values"]
        # The tokenizer alone: Blip2Processor would put image tokens in front for the LM.
        tokens = processor.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
        out = model(pixel_values=pixels, input_ids=tokens["input_ids"],
                    attention_mask=tokens["attention_mask"], use_image_text_matching_head=False)
    return model, out


def both_towers(encoder: object, images: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    image = encode(encoder, [image_item(p) for p in images], Side.TARGET)
    text = encode(encoder, [text_item(t) for t in TEXTS])
    return image, text


@pytest.mark.parametrize("query_token", [0, BLIP2_QUERY_TOKENS - 1])
def test_projection_features_match_the_model(
    tiny: Path, images: list[Path], library: tuple, query_token: int
) -> None:
    _, out = library
    encoder = load_model("blip2", checkpoint=str(tiny), model_args={"query_token": query_token})
    image, text = both_towers(encoder, images)
    # The model returns these L2-normalised; the adapter keeps the raw projections.
    want_image = out.image_embeds[:, query_token].numpy()
    np.testing.assert_allclose(unit(image), want_image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(unit(text), out.text_embeds.numpy(), rtol=0, atol=1e-5)
    assert encoder.config["image_vector"] == f"query token {query_token} of {BLIP2_QUERY_TOKENS}"


def test_query_tokens_give_different_vectors(tiny: Path, images: list[Path]) -> None:
    first = load_model("blip2", checkpoint=str(tiny))
    last = load_model("blip2", checkpoint=str(tiny), model_args={"query_token": 3})
    assert first.config["image_vector"] == f"query token 0 of {BLIP2_QUERY_TOKENS}"
    assert not np.allclose(both_towers(first, images)[0], both_towers(last, images)[0])


def test_qformer_features_are_the_states_before_projection(
    tiny: Path, images: list[Path], library: tuple
) -> None:
    model, out = library
    encoder = load_model("blip2", checkpoint=str(tiny), model_args={"features": "qformer"})
    image, text = both_towers(encoder, images)
    assert image.shape[1] == text.shape[1] == model.config.qformer_config.hidden_size
    np.testing.assert_allclose(text, out.text_model_output.last_hidden_state[:, 0].numpy(),
                               rtol=0, atol=1e-5)
    with torch.no_grad():
        projected = model.vision_projection(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(unit(projected), out.image_embeds[:, 0].numpy(), rtol=0, atol=1e-5)
    assert encoder.config["features"] == "qformer"


def test_options_are_checked(tiny: Path) -> None:
    with pytest.raises(ModelError, match="has 4 query tokens"):
        load_model("blip2", checkpoint=str(tiny), model_args={"query_token": 4})
    with pytest.raises(ModelError, match="projection, qformer"):
        load_model("blip2", checkpoint=str(tiny), model_args={"features": "pooled"})
