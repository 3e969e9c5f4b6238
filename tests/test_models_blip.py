"""BLIP adapter: vectors are the ITC-head features of BlipForImageTextRetrieval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import (
    IMAGE_SIZE,
    VISION,
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
    return checkpoint("blip", tmp_path_factory)


def test_vectors_are_the_contrastive_head_features(tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    images = write_images(tmp_path)
    model = transformers.BlipForImageTextRetrieval.from_pretrained(tiny).eval()
    processor = transformers.AutoProcessor.from_pretrained(tiny)
    with torch.no_grad():
        pixels = processor.image_processor([Image.open(p).convert("RGB") for p in images],
                                           return_tensors="pt")["pixel_values"]
        tokens = processor.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    pixel_values=pixels, use_itm_head=False)
        want_image = model.vision_proj(out.last_hidden_state[:, 0]).numpy()
        want_text = model.text_proj(out.question_embeds[:, 0]).numpy()
        itc = out.itm_score.numpy()

    encoder = load_model("blip", checkpoint=str(tiny))
    got_image = encode(encoder, [image_item(p) for p in images], Side.TARGET)
    got_text = encode(encoder, [text_item(t) for t in TEXTS])
    np.testing.assert_allclose(got_image, want_image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got_text, want_text, rtol=0, atol=1e-5)
    # Their cosine is BLIP's own image-text similarity.
    np.testing.assert_allclose(unit(got_image) @ unit(got_text).T, itc, rtol=0, atol=1e-5)


def test_a_checkpoint_without_retrieval_heads_is_refused(tmp_path: Path) -> None:
    # BlipModel has CLIP-style projections but no vision_proj/text_proj/text_encoder: loading it
    # as a retrieval model would leave them random.
    config = transformers.BlipConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, encoder_hidden_size=32),
        vision_config=dict(VISION, image_size=IMAGE_SIZE), projection_dim=16)
    transformers.BlipModel(config).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"lacks .* weights of BlipForImageTextRetrieval"):
        load_model("blip", checkpoint=str(tmp_path))
