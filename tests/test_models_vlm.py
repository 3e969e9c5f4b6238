"""The VLM path: pooling, input strings, padding, LoRA folders, E5-V prompts, options, CLI runs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_vlm import (
    LLAVA_NEXT,
    QWEN2VL,
    e5v_checkpoint,
    parity_items,
    save_qwen2vl_lora,
)

from mmeb.encoder import Encoder
from mmeb.errors import ModelError
from mmeb.items import Item, Side
from mmeb.registry import load_model, registered_models

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mmeb.models.pooling import last_token_pool, normalize  # noqa: E402
from mmeb.models.vlm import (  # noqa: E402
    memory_aware_batch_size,
    pad_token_ids,
    rename_adapter_keys,
    resize_for_resolution,
    resolve_layout,
    vlm_text,
)

VLMS = {"vlm2vec-qwen2vl-2b": "<|image_pad|>", "vlm2vec-qwen2vl-7b": "<|image_pad|>",
        "vlm2vec-llava-next": "<image>", "e5-v": "<image>"}
NATIVE = {"image_resolution": "native"}
KNOWN_ROWS = Path(__file__).parent / "data" / "known_rows"


def load(model: str, checkpoint: Path | str, **options: Any) -> Encoder:
    return load_model(model, checkpoint=str(checkpoint), device="cpu",
                      model_args={**NATIVE, **options})


# -- pooling and the shared functions ---------------------------------------------------------


def test_last_token_pool_takes_the_last_real_token_for_any_padding() -> None:
    hidden = torch.arange(2 * 3 * 5 * 1, dtype=torch.float32).reshape(3, 5, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0],    # right padding
                         [0, 0, 1, 1, 1],    # left padding
                         [1, 1, 1, 1, 1]])   # none
    got = last_token_pool(hidden, mask)
    want = torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 4]])
    assert torch.equal(got, want)


def test_normalize_gives_unit_float32_rows() -> None:
    x = torch.tensor([[3.0, 4.0], [0.5, 0.0]], dtype=torch.bfloat16)
    out = normalize(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [1.0, 0.0]]))


def test_vlm_text_swaps_only_the_image_token() -> None:
    raw = "<|image_1|>\nRepresent the given image with the following question: What is it?\n"
    item = Item(raw=raw, text="What is it?")
    assert vlm_text(item, "<image>") == (
        "<image>\nRepresent the given image with the following question: What is it?\n")
    plain = Item(raw="A cat.  \n\n", text="A cat.")
    assert vlm_text(plain, "<|image_pad|>") == "A cat.  \n\n"


def test_resolutions_squash_to_squares() -> None:
    from PIL import Image

    image = Image.new("RGB", (40, 100), (10, 20, 30))
    sizes = {name: resize_for_resolution(image, name).size for name in ("high", "mid", "low")}
    assert sizes == {"high": (1344, 1344), "mid": (672, 672), "low": (336, 336)}
    assert resize_for_resolution(image, "native") is image
    # Pillow 10's order (width first), whatever the installed Pillow does.
    wide = image.resize((336, 100), Image.Resampling.BICUBIC)
    assert resize_for_resolution(image, "low").tobytes() == wide.resize(
        (336, 336), Image.Resampling.BICUBIC).tobytes()
    with pytest.raises(ModelError, match="unknown image_resolution 'huge'"):
        resize_for_resolution(image, "huge")


def test_pad_token_ids_on_both_sides() -> None:
    seqs = [torch.tensor([5, 6, 7]), torch.tensor([8])]
    ids, mask = pad_token_ids(seqs, 0, "left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_token_ids(seqs, 0, "right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_memory_aware_batch_size() -> None:
    assert memory_aware_batch_size(None, 10**9) == 4
    assert memory_aware_batch_size(80 * 2**30, 2**30) == 40
    assert memory_aware_batch_size(2**30, 2**31) == 1
    assert memory_aware_batch_size(10**15, 1) == 64


def test_adapter_keys_move_to_the_transformers_5_layout() -> None:
    from mmeb.models.qwen2vl import Qwen2VLEncoder

    state = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": 1,
        "base_model.model.visual.blocks.0.attn.qkv.lora_B.weight": 2,
        "base_model.model.model.language_model.layers.1.mlp.down_proj.lora_A.weight": 3,
    }
    assert sorted(rename_adapter_keys(state, Qwen2VLEncoder.adapter_key_renames)) == [
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.language_model.layers.1.mlp.down_proj.lora_A.weight",
        "base_model.model.model.visual.blocks.0.attn.qkv.lora_B.weight",
    ]


def test_checkpoint_layout(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct"}))
    assert resolve_layout(str(adapter), None).model == "Qwen/Qwen2-VL-2B-Instruct"
    assert resolve_layout(str(adapter), "/models/base").model == "/models/base"
    assert resolve_layout(str(QWEN2VL), None).adapter is None
    with pytest.raises(ModelError, match="applies to a LoRA adapter checkpoint"):
        resolve_layout(str(QWEN2VL), "/models/base")
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "/home/trainer/ckpt/Qwen2-VL-2B-Instruct"}))
    assert resolve_layout(str(adapter), None, "Qwen/Qwen2-VL-2B-Instruct").model == (
        "Qwen/Qwen2-VL-2B-Instruct")
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="pass --model-arg base=ID_OR_DIR"):
        resolve_layout(str(adapter), None)


# -- registry, options, errors ----------------------------------------------------------------


def test_registered_with_checkpoint_extra_and_paper_score() -> None:
    from click.testing import CliRunner

    from mmeb.cli import main

    models = registered_models()
    for name in VLMS:
        entry = models[name]
        assert entry.extra == "vlm"
        assert entry.default_checkpoint
        assert entry.paper_score is not None
    listing = CliRunner().invoke(main, ["models"]).output
    for name in VLMS:
        line = next(row for row in listing.splitlines() if row.startswith(name + " "))
        assert f" {models[name].paper_score:.1f} " in line
    assert "royokong/e5-v" in listing


@pytest.mark.parametrize(
    ("args", "message"),
    [({"image_resolution": "4k"}, "unknown image_resolution"),
     ({"pooling": "mean"}, "unknown pooling 'mean'"),
     ({"padding_side": "middle"}, "unknown padding_side"),
     ({"normalize": "yes"}, "normalize must be true or false"),
     ({"pixel_pipeline": "pillow"}, "unknown pixel_pipeline"),
     ({"colour": "red"}, "does not take --model-arg colour")],
)
def test_bad_options_are_refused_before_loading(args: dict[str, Any], message: str) -> None:
    for name in VLMS:
        with pytest.raises(ModelError, match=message):
            load_model(name, checkpoint="unused", model_args=args)
    with pytest.raises(ModelError, match="max_pixels must be a positive integer"):
        load_model("vlm2vec-qwen2vl-2b", checkpoint="unused", model_args={"max_pixels": 0})


def test_missing_library_names_the_vlm_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelError, match=r'pip install "mmeb\[vlm\]"'):
        load_model("vlm2vec-llava-next", checkpoint=str(LLAVA_NEXT))


def test_default_checkpoints_offline_are_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("vlm2vec-qwen2vl-2b", "e5-v"):
        default = registered_models()[name].default_checkpoint
        with pytest.raises(ModelError) as error:
            load_model(name, device="cpu")
        assert str(error.value) == (
            f"cannot load checkpoint {default} offline; pass --checkpoint DIR with a local copy "
            "or unset HF_HUB_OFFLINE"
        )


# -- batching: padding side, mixed lengths, orphan image tokens ------------------------------


@pytest.fixture(scope="module", params=["vlm2vec-qwen2vl-2b", "vlm2vec-llava-next", "e5-v"])
def family_checkpoint(request: pytest.FixtureRequest,
                      tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    name = str(request.param)
    folders = {"vlm2vec-qwen2vl-2b": QWEN2VL, "vlm2vec-llava-next": LLAVA_NEXT}
    return name, folders.get(name) or e5v_checkpoint(tmp_path_factory)


def test_any_batch_gives_the_vectors_of_one_item_at_a_time(
    family_checkpoint: tuple[str, Path]
) -> None:
    name, folder = family_checkpoint
    items = parity_items(QWEN2VL if "qwen" in name else LLAVA_NEXT)
    # The raw WebQA/EDIS queries carry <|image_1|> without an image.
    items.append(Item(raw="<|image_1|>\nFind a Wikipedia image that answers this question: Why?\n",
                      text="Why?"))
    alone = load(name, folder, batch_size=1)
    want = np.stack([alone.encode([item], side=Side.QUERY)[0] for item in items])
    for side in ("left", "right"):
        together = load(name, folder, padding_side=side, batch_size=len(items))
        assert np.abs(together.encode(items, side=Side.QUERY) - want).max() <= 1e-5, side
    assert np.abs(want[-1] - want[0]).max() > 1e-3  # the items do differ


# -- LoRA adapter folders ---------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [True, False], ids=["released-layout-bin", "peft-safetensors"])
def test_lora_adapter_folder_equals_the_merged_model(tmp_path: Path, legacy: bool) -> None:
    pytest.importorskip("peft")
    adapter, merged = save_qwen2vl_lora(tmp_path, legacy=legacy)
    items = parity_items(QWEN2VL)
    via_adapter = load("vlm2vec-qwen2vl-7b", adapter)
    got = via_adapter.encode(items, side=Side.QUERY)
    want = load("vlm2vec-qwen2vl-7b", merged).encode(items, side=Side.QUERY)
    base = load("vlm2vec-qwen2vl-7b", QWEN2VL).encode(items, side=Side.QUERY)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(got - base).max() > 1e-2  # the adapter changes the model
    config = via_adapter.config  # type: ignore[attr-defined]
    assert (config["lora_adapter"], config["base"]) == (str(adapter), str(QWEN2VL))


def test_lora_base_can_be_given_and_must_exist(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    adapter, merged = save_qwen2vl_lora(tmp_path, legacy=True)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")
    config_file.write_text(json.dumps(config))
    # A training machine's folder: the released base stands in (offline here, so it says so).
    with pytest.raises(ModelError, match="cannot load checkpoint Qwen/Qwen2-VL-2B-Instruct off"):
        load("vlm2vec-qwen2vl-2b", adapter)
    with pytest.raises(ModelError, match="base model directory not found"):
        load("vlm2vec-qwen2vl-2b", adapter, base=str(tmp_path / "nowhere"))
    items = parity_items(QWEN2VL)[3:5]
    got = load("vlm2vec-qwen2vl-2b", adapter, base=str(QWEN2VL)).encode(items, side=Side.QUERY)
    want = load("vlm2vec-qwen2vl-2b", merged).encode(items, side=Side.QUERY)
    assert np.abs(got - want).max() <= 1e-5


def test_qwen2vl_pixel_bounds_default_to_the_checkpoint_and_can_be_set() -> None:
    item = parity_items(QWEN2VL)[3]  # 160x120 -> 8x12 patches of 14 px at the default bounds
    default = load("vlm2vec-qwen2vl-2b", QWEN2VL)
    small = load("vlm2vec-qwen2vl-2b", QWEN2VL, max_pixels=56 * 56)
    assert (default.config["min_pixels"], default.config["max_pixels"]) == (3136, 12845056)  # type: ignore[attr-defined]
    assert small.config["max_pixels"] == 56 * 56  # type: ignore[attr-defined]
    grid = {e.config["max_pixels"]: e._prepare(item, side=Side.QUERY, task=None)["image_grid_thw"]  # type: ignore[attr-defined]
            for e in (default, small)}
    assert grid[12845056].tolist() == [[1, 8, 12]]
    assert grid[3136].tolist() == [[1, 2, 4]]


# -- E5-V --------------------------------------------------------------------------------------

WRAP = ("<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n \n")


@pytest.fixture(scope="module")
def e5v(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return e5v_checkpoint(tmp_path_factory)


def e5v_items() -> tuple[Item, Item, Item]:
    image = parity_items(LLAVA_NEXT)[5].image_path
    question = "What is in the image?"
    instruction = "Represent the given image with the following question:"
    return (
        Item(raw="Find me an everyday image that matches the given caption: A red moped.\n",
             text="A red moped.", instruction="Find me an everyday image that matches the "
             "given caption:"),
        Item(raw="<|image_1|>\nRepresent the given image.\n", text="",
             instruction="Represent the given image.", image_path=image),
        Item(raw=f"<|image_1|>\n{instruction} {question}\n", text=question,
             instruction=instruction, image_path=image),
    )


def test_e5v_prompts_per_input_kind(e5v: Path) -> None:
    text, image, both = e5v_items()
    plain, prepend = load("e5-v", e5v), load("e5-v", e5v, instruction="prepend")
    prompts = [plain._text(i, side=Side.QUERY, task=None) for i in (text, image, both)]  # type: ignore[attr-defined]
    assert prompts == [
        WRAP.format("A red moped.\nSummary above sentence in one word: "),
        WRAP.format("<image>\nSummary above image in one word: "),
        WRAP.format("<image>\nWhat is in the image?\nSummary above image and text in one word: "),
    ]
    assert prepend._text(image, side=Side.TARGET, task=None) == WRAP.format(  # type: ignore[attr-defined]
        "<image>\nRepresent the given image.\nSummary above image and text in one word: ")


def test_e5v_equals_an_independent_forward(e5v: Path) -> None:
    import transformers as tf

    encoder = load("e5-v", e5v, batch_size=3)
    got = encoder.encode(list(e5v_items()), side=Side.QUERY)
    # E5-V's own recipe on the native classes: its prompt strings, its processor settings, left
    # padding with pad = eos, the model's own forward, the last position, normalised.
    tokenizer = tf.AutoTokenizer.from_pretrained(e5v)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    processor = tf.LlavaNextProcessor(
        image_processor=tf.LlavaNextImageProcessorPil.from_pretrained(e5v), tokenizer=tokenizer,
        patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    model = tf.LlavaNextForConditionalGeneration.from_pretrained(e5v, dtype=torch.float32).eval()
    text, image, both = e5v_items()
    prompts = {
        "text": WRAP.format("A red moped.\nSummary above sentence in one word: "),
        "image": WRAP.format("<image>\nSummary above image in one word: "),
        "both": WRAP.format("<image>\nWhat is in the image?\n"
                            "Summary above image and text in one word: "),
    }
    want = []
    with torch.no_grad():
        for key, item in zip(prompts, (text, image, both), strict=True):
            images = [item.image] if item.has_image else None
            inputs = processor(text=[prompts[key]], images=images, return_tensors="pt")
            hidden = model.model(**inputs).last_hidden_state[:, -1]
            want.append(torch.nn.functional.normalize(hidden, dim=-1)[0].numpy())
    assert np.abs(got - np.stack(want)).max() <= 1e-5
    assert encoder.pad_id == tokenizer.eos_token_id  # type: ignore[attr-defined]
    assert encoder.config["instruction"] == "none"  # type: ignore[attr-defined]


# -- the exact strings handed to the processors, for real MMEB rows ---------------------------


class Recorder:
    """Wraps a tokenizer or processor and records the text of every call."""

    def __init__(self, inner: Any, seen: list[str]) -> None:
        self.inner, self.seen = inner, seen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        text = kwargs["text"] if "text" in kwargs else args[0]
        self.seen.extend([text] if isinstance(text, str) else list(text))
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def known_strings() -> list[dict[str, Any]]:
    return json.loads((KNOWN_ROWS / "processor_inputs.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("model", "folder", "token"),
                         [("vlm2vec-qwen2vl-2b", QWEN2VL, "<|image_pad|>"),
                          ("vlm2vec-llava-next", LLAVA_NEXT, "<image>")])
def test_processor_input_strings_for_real_mmeb_rows(
    model: str, folder: Path, token: str, tmp_path: Path
) -> None:
    from PIL import Image

    encoder = load(model, folder)
    seen: list[str] = []
    encoder.tokenizer = Recorder(encoder.tokenizer, seen)  # type: ignore[attr-defined]
    if hasattr(encoder, "processor"):
        encoder.processor = Recorder(encoder.processor, seen)
    image = tmp_path / "image.png"
    Image.new("RGB", (28, 28), (200, 40, 40)).save(image)
    cases = known_strings()
    for case in cases:
        item = Item(raw=case["raw"], text="", image_path=str(image) if case["image"] else None)
        seen.clear()
        encoder._prepare(item, side=Side.QUERY, task=None)  # type: ignore[attr-defined]
        # Qwen2-VL's processor step repeats <|image_pad|> per patch group; VLM2Vec's did too.
        handed = re.sub(r"(<\|image_pad\|>)+", "<|image_pad|>", seen[-1])
        assert handed == case["expected_qwen2_vl"].replace("<|image_pad|>", token), case["source"]
    assert len(cases) >= 40


# -- mmeb run, end to end ---------------------------------------------------------------------

# Image (+text) queries, text targets: a few images per run (the slow check covers the rest).
E2E_TASKS = "Sample-ShapeVQA,Sample-Caption-i2t"


def run_cli(name: str, folder: Path, out: Path, *extra: str) -> Any:
    from click.testing import CliRunner

    from mmeb.cli import main

    args = ["run", "--model", name, "--checkpoint", str(folder), "--split", "sample",
            "--model-arg", "image_resolution=low", "--output-dir", str(out), "--no-progress",
            *extra]
    return CliRunner().invoke(main, args)


def test_mmeb_run_on_the_sample_suite(family_checkpoint: tuple[str, Path], tmp_path: Path) -> None:
    name, folder = family_checkpoint
    out = tmp_path / "results"
    result = run_cli(name, folder, out, "--tasks", E2E_TASKS, "--limit", "3")
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*/*.json"))
    assert sorted(f.stem for f in files) == sorted(E2E_TASKS.split(","))
    for file in files:
        doc = json.loads(file.read_text())
        adapter = doc["config"]["adapter"]
        assert (adapter["family"], adapter["checkpoint"]) == (name, str(folder))
        assert (adapter["image_resolution"], adapter["pooling"], adapter["normalize"]) == (
            "low", "last", True)
        assert 0.0 <= doc["main_score"] <= 1.0
        assert doc["counts"]["rows"] == 3


@pytest.mark.slow
def test_mmeb_run_on_the_whole_sample_split(
    family_checkpoint: tuple[str, Path], tmp_path: Path
) -> None:
    """Every sample task, every query, per VLM family (run with -m slow)."""
    from mmeb.tasks import select_tasks

    name, folder = family_checkpoint
    out = tmp_path / "results"
    result = run_cli(name, folder, out)
    assert result.exit_code == 0, result.output
    docs = [json.loads(f.read_text()) for f in sorted(out.glob("*/*.json"))]
    assert sorted(d["task"] for d in docs) == sorted(t.name for t in select_tasks("sample"))
    assert all(d["counts"]["rows"] == d["counts"]["rows_in_data"] for d in docs)
    assert "| overall (12)" in result.output
