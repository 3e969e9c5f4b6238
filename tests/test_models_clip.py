"""CLIP adapter: vectors equal transformers' own CLIPModel calls on the same checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import checkpoint, encode, image_item, text_item, vqa_item, write_images

from mmeb.errors import ModelError
from mmeb.items import Side
from mmeb.models.fusion import Fusion
from mmeb.registry import load_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# One token per character in the tiny tokenizer: far beyond CLIP's 77 positions.
LONG = "a photo of a red car shown in the news with a cat and a dog " * 5
TEXTS = ["a photo of a cat", "what is it?", LONG]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint("clip", tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"))


def features(output: object) -> np.ndarray:
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor.numpy()


def library_vectors(tiny: Path, images: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    model = transformers.CLIPModel.from_pretrained(tiny).eval()
    processor = transformers.AutoProcessor.from_pretrained(tiny)
    pictures = [Image.open(path).convert("RGB") for path in images]
    with torch.no_grad():
        pixels = processor(images=pictures, return_tensors="pt")["pixel_values"]
        tokens = processor(text=TEXTS, padding=True, truncation=True, return_tensors="pt")
        image = features(model.get_image_features(pixel_values=pixels))
        text = features(model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
    return image, text


def test_vectors_equal_get_image_and_text_features(tiny: Path, images: list[Path]) -> None:
    encoder = load_model("clip", checkpoint=str(tiny))
    want_image, want_text = library_vectors(tiny, images)
    got_image = encode(encoder, [image_item(p) for p in images], Side.TARGET)
    got_text = encode(encoder, [text_item(t) for t in TEXTS])
    np.testing.assert_allclose(got_image, want_image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got_text, want_text, rtol=0, atol=1e-5)


def test_long_texts_are_cut_at_77_tokens(tiny: Path) -> None:
    encoder = load_model("clip", checkpoint=str(tiny))
    assert encoder.config["max_text_tokens"] == 77
    assert len(encoder.tokenizer(LONG)["input_ids"]) > 77
    # Words past the limit cannot change the vector.
    vectors = encode(encoder, [text_item(LONG), text_item(LONG + " green dog")])
    np.testing.assert_array_equal(vectors[0], vectors[1])


@pytest.mark.parametrize("policy", list(Fusion))
def test_each_fusion_policy_through_the_adapter(
    tiny: Path, images: list[Path], policy: Fusion
) -> None:
    plain = load_model("clip", checkpoint=str(tiny))
    image, text = encode(plain, [image_item(images[0]), text_item("what is it?")])
    fused = load_model("clip", checkpoint=str(tiny), model_args={"fusion": policy.value})
    got = encode(fused, [vqa_item(images[0], "what is it?")])[0]
    unit = np.linalg.norm
    want = {
        Fusion.SUM: image + text,
        Fusion.SUM_NORMALIZED: image / unit(image) + text / unit(text),
        Fusion.MEAN: (image + text) / 2,
        Fusion.IMAGE: image,
        Fusion.TEXT: text,
    }[policy]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert fused.config["fusion"] == policy.value


def test_a_checkpoint_missing_weights_is_refused(tiny: Path, tmp_path: Path) -> None:
    # Without its projection the image tower would be random: vectors would score chance.
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny, tmp_path, dirs_exist_ok=True)
    weights = load_file(tiny / "model.safetensors")
    del weights["visual_projection.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"lacks 1 weights of CLIPModel \(visual_projection"):
        load_model("clip", checkpoint=str(tmp_path))
