"""Phi-3.5-V module and processor against the embeddings VLM2Vec's own code computed.

tests/data/parity/phi3_v holds a tiny random checkpoint in VLM2Vec-Full's key layout and the
embeddings VLM2Vec v1.0 computed for 8 MMEB inputs (its README says how).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from phi3v_helpers import (
    PARITY,
    TINY_VISION,
    encode,
    expanded_ids,
    item_image,
    parity_items,
)

from mmeb.errors import ModelError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mmeb.models.phi3v.processing import (  # noqa: E402
    Phi3VProcessor,
    hd_size,
    image_token_count,
    num_image_tokens,
)
from mmeb.models.phi3v.weights import load_model  # noqa: E402


@pytest.fixture(scope="module")
def processor() -> Phi3VProcessor:
    return Phi3VProcessor.from_pretrained(PARITY, num_crops=4)


@pytest.fixture(scope="module")
def model():  # -> Phi3VEmbeddingModel
    return load_model(PARITY, vision_config=TINY_VISION, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def prepared(processor: Phi3VProcessor) -> list[dict]:
    return [processor(item["text_model"], item_image(item)) for item in parity_items()]


def test_processor_gives_the_reference_token_ids_and_pixel_values(prepared: list[dict]) -> None:
    for item, out in zip(parity_items(), prepared, strict=True):
        assert out["input_ids"].tolist() == expanded_ids(item), item["index"]
        assert out["attention_mask"].tolist() == [1] * item["num_tokens"]
        if item["image"] is None:
            assert out["pixel_values"] is None
            continue
        pixels = out["pixel_values"].double()
        assert list(pixels.shape) == item["pixel_values_shape"]
        assert out["image_sizes"].tolist() == [item["image_sizes_hw"]]
        assert float(pixels.sum()) == pytest.approx(item["pixel_values_sum"], rel=1e-9, abs=1e-6)
        assert float(pixels.abs().sum()) == pytest.approx(item["pixel_values_abs_sum"], rel=1e-9)
        crop_sums = [float(crop.abs().sum()) for crop in pixels[0]]
        assert crop_sums == pytest.approx(item["pixel_values_crop_abs_sums"], rel=1e-9, abs=1e-6)


def test_each_item_alone_reproduces_vlm2vec_embeddings(model, processor, prepared) -> None:
    expected = np.load(PARITY / "expected.npy")
    got = np.concatenate([encode(model, processor, [one]) for one in prepared])
    assert got.shape == expected.shape == (8, 64)
    assert float(np.abs(got - expected).max()) <= 1e-4


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_equals_item_by_item(model, processor, prepared, side: str) -> None:
    alone = np.concatenate([encode(model, processor, [one]) for one in prepared])
    batched = encode(model, processor, prepared, side=side)
    assert float(np.abs(batched - alone).max()) <= 1e-5
    assert float(np.abs(batched - np.load(PARITY / "expected_batched.npy")).max()) <= 1e-4


def test_eager_attention_gives_the_same_embeddings(processor, prepared) -> None:
    eager = load_model(PARITY, vision_config=TINY_VISION, attn_implementation="eager")
    expected = np.load(PARITY / "expected.npy")
    got = encode(eager, processor, prepared)
    assert float(np.abs(got - expected).max()) <= 1e-4


# The spec's worked examples: input (W, H) -> {num_crops: (HD W, HD H, tokens)}.
HD_TABLE = [
    ((640, 480), {4: (672, 672, 757), 16: (1344, 1008, 1921)}),
    ((480, 640), {4: (672, 672, 757), 16: (1008, 1344, 1933)}),
    ((1344, 1344), {4: (672, 672, 757), 16: (1344, 1344, 2509)}),
    ((336, 336), {4: (672, 672, 757), 16: (1344, 1344, 2509)}),
    ((224, 224), {4: (672, 672, 757), 16: (1344, 1344, 2509)}),
    ((1000, 300), {4: (1008, 336, 601), 16: (2016, 672, 1909)}),
    ((300, 1000), {4: (336, 1008, 625), 16: (672, 2016, 1957)}),
    ((1920, 1080), {4: (672, 672, 757), 16: (1680, 1008, 2353)}),
]


def _formula(hd_w: int, hd_h: int) -> int:
    h, w = hd_h // 336, hd_w // 336
    return (h * w + 1) * 144 + 1 + (h + 1) * 12


@pytest.mark.parametrize(("size", "by_crops"), HD_TABLE)
def test_hd_transform_token_counts_follow_the_formula(processor, size, by_crops) -> None:
    from PIL import Image

    image = Image.new("RGB", size, (90, 140, 200))
    for num_crops, (hd_w, hd_h, tokens) in by_crops.items():
        assert hd_size(*size, num_crops=num_crops) == (hd_h, hd_w)
        assert num_image_tokens(hd_h, hd_w) == _formula(hd_w, hd_h) == tokens
        assert image_token_count(*size, num_crops=num_crops) == tokens
        proc = Phi3VProcessor(processor.tokenizer, num_crops=num_crops)
        out = proc("<|image_1|>\nRepresent the given image.\n", image)
        assert int((out["input_ids"] == -1).sum()) == tokens
        assert out["image_sizes"].tolist() == [[hd_h, hd_w]]
        assert tuple(out["pixel_values"].shape) == (1, num_crops + 1, 3, 336, 336)


@pytest.mark.parametrize("size", [(1000, 300), (300, 1000), (40, 100)])
def test_the_image_embedding_gives_one_vector_per_image_position(model, processor, size) -> None:
    from PIL import Image

    out = processor("<|image_1|>\nx", Image.new("RGB", size, (10, 200, 30)))
    with torch.inference_mode():
        features = model.image_embed(out["pixel_values"], out["image_sizes"])
    assert features.shape == (image_token_count(*size, num_crops=4), 64)
    assert features.shape[0] == int((out["input_ids"] == -1).sum())


def test_clip_features_are_the_hidden_state_before_the_last_layer(model) -> None:
    pixels = torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    tower = model.image_embed.img_processor
    with torch.inference_mode():
        ours = model.image_embed.patch_features(pixels)
        reference = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert ours.shape == (2, 576, 32)
    assert torch.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("length", [100, 5000, 100])
def test_rope_is_phi3_longrope(model, length: int) -> None:
    """cos/sin equal the original's su scaling: short factors up to 4096 positions, long ones
    beyond, times sqrt(1 + ln(131072 / 4096) / ln(4096)) always; the switch goes both ways."""
    import json

    raw = json.loads((PARITY / "config.json").read_text())
    factors = raw["rope_scaling"]["long_factor" if length > 4096 else "short_factor"]
    head_dim = raw["hidden_size"] // raw["num_attention_heads"]
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (torch.tensor(factors, dtype=torch.float32) * raw["rope_theta"] ** exponent)
    positions = torch.arange(length)
    angles = positions[:, None].float() * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    scale = math.sqrt(1 + math.log(131072 / 4096) / math.log(4096))
    assert scale == pytest.approx(1.1902380714)
    x = torch.zeros(1, length, head_dim)
    cos, sin = model.language_model.rotary_emb(x, positions[None])
    assert torch.allclose(cos[0], angles.cos() * scale, atol=1e-5)
    assert torch.allclose(sin[0], angles.sin() * scale, atol=1e-5)


def test_text_only_inputs_are_truncated_and_image_inputs_never(processor) -> None:
    from PIL import Image

    short = Phi3VProcessor(processor.tokenizer, max_length=4)
    text = "A man with a red helmet on a small moped on a dirt road."
    assert short(text)["input_ids"].tolist() == processor(text)["input_ids"].tolist()[:4]
    with_image = short("<|image_1|>\n" + text, Image.new("RGB", (64, 48)))
    assert with_image["input_ids"].shape[0] > 757


def test_a_prompt_and_image_that_do_not_fit_fail_in_one_line(processor, model) -> None:
    from PIL import Image

    image = Image.new("RGB", (64, 48))
    for text in ("no tag here", "<|image_1|> and <|image_1|>", "<|image_2|>"):
        with pytest.raises(ModelError) as err:
            processor(text, image)
        assert "\n" not in str(err.value)
    ids = processor("<|image_1|>\nx", image)
    batch = processor.collate([ids])
    with pytest.raises(ModelError, match="no pixel_values"):
        model(batch["input_ids"], batch["attention_mask"])


def test_the_package_parts_import_without_torch() -> None:
    code = (
        "import sys, mmeb.models.phi3v, mmeb.models.phi3v.config, mmeb.models.phi3v.processing, "
        "mmeb.models.phi3v.weights; "
        "print([m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
