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
def loaded() -> tuple:
    from mmeb.models.phi3v import load

    return load(PARITY, vision_config=TINY_VISION, num_crops=4, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def processor(loaded: tuple) -> Phi3VProcessor:
    return loaded[1]


@pytest.fixture(scope="module")
def model(loaded: tuple):  # -> Phi3VEmbeddingModel
    return loaded[0]


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


# 100 again after 5000: the switch from long back to short factors must happen too.
@pytest.mark.parametrize(("length", "_order"), [(100, "first"), (5000, "long"), (100, "again")])
def test_rope_is_phi3_longrope(model, length: int, _order: str) -> None:
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


# microsoft/Phi-3.5-vision-instruct's config.json (rope factors rounded as in the spec; only
# their count matters here).
SHORT = [1.08, 1.1, 1.13, 1.28, 1.31, 1.45, 1.45, 1.95, 2.03, 2.43, 2.57, 2.95, 3.73, 3.87, 4.19,
         4.44, 4.64, 4.98, 5.16, 5.28, 5.76, 5.89, 5.89, 5.97, 6.09, 6.28, 6.77, 6.89, 7.11, 7.13,
         7.18, 7.29, 7.34, 7.56, 7.62, 7.7, 7.88, 7.88, 7.88, 7.94, 7.95, 7.98, 8.2, 8.44, 8.47,
         8.59, 8.81, 9.0]
PHI35V_CONFIG = {
    "model_type": "phi3_v", "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "vocab_size": 32064, "hidden_act": "silu", "rms_norm_eps": 1e-05,
    "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
    "rope_theta": 10000.0, "sliding_window": 262144, "bos_token_id": 1, "eos_token_id": 2,
    "pad_token_id": 32000, "tie_word_embeddings": False, "embd_pdrop": 0.0,
    "rope_scaling": {"type": "su", "short_factor": SHORT, "long_factor": [2 * x for x in SHORT]},
    "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                   "projection_cls": "mlp", "use_hd_transform": True,
                   "with_learnable_separator": True},
    "img_processor": {"name": "clip_vision_model", "image_dim_out": 1024, "num_img_tokens": 144,
                      "model_name": "openai/clip-vit-large-patch14-336"},
}


def test_the_full_size_module_has_vlm2vec_fulls_parameters(tmp_path) -> None:
    """Built on the meta device from Phi-3.5-V's config: 4,146,621,440 parameters (mteb's count
    for VLM2Vec-Full) less the LM head the embedding model does not load (32064 x 3072)."""
    import json

    from mmeb.models.phi3v.config import load_config
    from mmeb.models.phi3v.modeling import Phi3VEmbeddingModel
    from mmeb.models.phi3v.weights import checkpoint_key

    (tmp_path / "config.json").write_text(json.dumps(PHI35V_CONFIG))
    config = load_config(tmp_path)
    assert config.clip_layers_used == 23
    with torch.device("meta"):
        full = Phi3VEmbeddingModel(config)
    params = dict(full.named_parameters())
    assert sum(p.numel() for p in params.values()) == 4_146_621_440 - 32064 * 3072
    keys = {checkpoint_key(name) for name in params}
    assert len(keys) == len(params) == 1 + 32 * 6 + 1 + 6 + 7 + 24 * 16
    assert "model.vision_embed_tokens.img_processor.vision_model.pre_layrnorm.weight" in keys
    rotary = full.language_model.rotary_emb
    assert rotary.attention_scaling == pytest.approx(1.1902380714)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "phi3"}, "model_type"),
        ({"rope_scaling": {"type": "yarn", "short_factor": [1.0], "long_factor": [1.0]}}, "yarn"),
        ({"embd_layer": {"projection_cls": "linear"}}, "projection_cls"),
        ({"img_processor": {"image_dim_out": 64}}, "image_dim_out"),
    ],
)
def test_a_config_the_module_cannot_honour_fails_in_one_line(tmp_path, change, message) -> None:
    import json

    from mmeb.models.phi3v.config import load_config

    raw = json.loads((PARITY / "config.json").read_text()) | change
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=message) as err:
        load_config(tmp_path, TINY_VISION)
    assert "\n" not in str(err.value)


def test_a_vision_config_must_keep_336_pixel_crops(tmp_path) -> None:
    import json

    vision = json.loads(TINY_VISION.read_text()) | {"image_size": 224}
    (tmp_path / "vision.json").write_text(json.dumps(vision))
    with pytest.raises(ModelError, match="image_size 336"):
        load_model(PARITY, vision_config=tmp_path / "vision.json")


def test_an_attention_implementation_that_cannot_run_fails_in_one_line() -> None:
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    for name in ("flash_attention_2", "fast"):
        with pytest.raises(ModelError) as err:
            load_model(PARITY, vision_config=TINY_VISION, attn_implementation=name)
        assert "\n" not in str(err.value)
        assert "attn_implementation" in str(err.value)


def test_bfloat16_runs_the_same_path_close_to_float32(processor, prepared) -> None:
    """bf16 weights take fp32 pixel values and produce the reference embeddings to bf16
    precision (VLM2Vec evaluates in bf16)."""
    half = load_model(PARITY, vision_config=TINY_VISION, dtype="bfloat16")
    expected = np.load(PARITY / "expected.npy")
    got = encode(half, processor, prepared)
    cosine = (got * expected).sum(axis=1)
    assert np.all(cosine > 0.999), cosine
