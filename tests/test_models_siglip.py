"""SigLIP adapter: vectors equal transformers' SiglipModel calls, texts fed as SigLIP expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import checkpoint, encode, image_item, text_item, write_images

from mmeb.items import Side
from mmeb.registry import load_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Longer than the tiny text tower's 16 positions.
TEXTS = ["a photo of a cat", "what is it?", "the red car shown in the news with a cat and a dog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint("siglip", tmp_path_factory)


def pooled(output: object) -> np.ndarray:
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor.numpy()


def test_vectors_equal_get_image_and_text_features(tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    images = write_images(tmp_path)
    model = transformers.SiglipModel.from_pretrained(tiny).eval()
    processor = transformers.AutoProcessor.from_pretrained(tiny)
    with torch.no_grad():
        pixels = processor(images=[Image.open(p).convert("RGB") for p in images],
                           return_tensors="pt")["pixel_values"]
        # SigLIP's documented text input: padded to max_length, no attention mask.
        tokens = processor(text=TEXTS, padding="max_length", max_length=16, truncation=True,
                           return_tensors="pt")
        want_image = pooled(model.get_image_features(pixel_values=pixels))
        want_text = pooled(model.get_text_features(input_ids=tokens["input_ids"]))

    encoder = load_model("siglip", checkpoint=str(tiny))
    got_image = encode(encoder, [image_item(p) for p in images], Side.TARGET)
    got_text = encode(encoder, [text_item(t) for t in TEXTS])
    np.testing.assert_allclose(got_image, want_image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got_text, want_text, rtol=0, atol=1e-5)
    assert encoder.config["text_padding"] == "max_length"
    assert encoder.config["max_text_tokens"] == 16


def test_a_text_does_not_depend_on_its_batch(tiny: Path) -> None:
    # Fixed-length padding: without an attention mask, padding to the longest text of the
    # batch would change a short text's vector with its neighbours.
    encoder = load_model("siglip", checkpoint=str(tiny))
    alone = encode(encoder, [text_item("a cat")])
    batch = encode(encoder, [text_item("a cat"), text_item(TEXTS[2])])
    np.testing.assert_allclose(alone[0], batch[0], rtol=0, atol=1e-6)
