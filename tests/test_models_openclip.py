"""OpenCLIP adapter: vectors equal open_clip's encode_image / encode_text; checkpoint forms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import checkpoint, encode, image_item, text_item, write_images

from mmeb.errors import ModelError
from mmeb.items import Side
from mmeb.models.openclip import open_clip_name
from mmeb.registry import load_model

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

# Longer than open_clip's 77-token context.
TEXTS = ["a photo of a cat", "what is it?", "the red car shown in the news " * 20]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint("openclip", tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"))


def both_towers(encoder: object, images: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    image = encode(encoder, [image_item(p) for p in images], Side.TARGET)
    text = encode(encoder, [text_item(t) for t in TEXTS])
    return image, text


def test_vectors_equal_encode_image_and_encode_text(tiny: Path, images: list[Path]) -> None:
    from PIL import Image

    name = f"local-dir:{tiny}"
    model, preprocess = open_clip.create_model_from_pretrained(name)
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        want_image = model.encode_image(pixels).numpy()
        want_text = model.encode_text(tokenizer(TEXTS)).numpy()

    encoder = load_model("openclip", checkpoint=str(tiny))
    image, text = both_towers(encoder, images)
    np.testing.assert_allclose(image, want_image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(text, want_text, rtol=0, atol=1e-5)
    assert encoder.config["open_clip_model"] == name
    assert encoder.config["max_text_tokens"] == 77


def test_local_dir_prefix_and_architecture_with_weights_file_load_the_same_model(
    tiny: Path, images: list[Path], tmp_path: Path
) -> None:
    want = both_towers(load_model("openclip", checkpoint=str(tiny)), images)
    prefixed = load_model("openclip", checkpoint=f"local-dir:{tiny}")
    # A built-in architecture name plus a weights file: register the tiny config as one.
    config = json.loads((tiny / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "mmeb-tiny-ViT.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    weights = tmp_path / "tiny.safetensors"
    shutil.copy(tiny / "open_clip_model.safetensors", weights)
    named = load_model("openclip", checkpoint="mmeb-tiny-ViT",
                       model_args={"pretrained": str(weights)})
    for got, expected in zip(both_towers(prefixed, images), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # Same weights; the image side differs only by preprocessing, which the local dir sets and
    # the bare architecture leaves at open_clip's defaults.
    image, text = both_towers(named, images)
    np.testing.assert_allclose(text, want[1], rtol=0, atol=1e-5)
    assert not np.allclose(image, want[0], atol=1e-3)


def test_checkpoint_forms(tiny: Path) -> None:
    assert open_clip_name("hf-hub:laion/x") == "hf-hub:laion/x"
    assert open_clip_name("laion/x") == "hf-hub:laion/x"
    assert open_clip_name("ViT-B-32") == "ViT-B-32"
    assert open_clip_name(str(tiny)) == f"local-dir:{tiny}"


def test_architecture_without_weights_lists_its_tags() -> None:
    with pytest.raises(ModelError, match=r"pretrained=TAG_OR_FILE .*laion2b_s34b_b79k"):
        load_model("openclip", checkpoint="ViT-B-32")


def test_pretrained_is_refused_where_the_checkpoint_has_weights(tiny: Path) -> None:
    with pytest.raises(ModelError, match="applies only to a built-in"):
        load_model("openclip", checkpoint=str(tiny), model_args={"pretrained": "openai"})


def test_a_pretrained_tag_offline_is_one_clear_error() -> None:
    with pytest.raises(ModelError, match="cannot load checkpoint ViT-B-32 offline"):
        load_model("openclip", checkpoint="ViT-B-32", model_args={"pretrained": "openai"})
