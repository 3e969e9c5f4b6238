"""The vlm2vec-phi35v adapters through the public path: registry, options, parity, LoRA, CLI.

The module itself (processor, HD transform, weights, LoRA merge) is tested in
test_models_phi3v.py and test_models_phi3v_weights.py; here the same reference embeddings must
come out of ``mmeb.registry.load_model`` and ``mmeb run``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from phi3v_helpers import PARITY, TINY_VISION, make_adapter, parity_items, write_checkpoint

from mmeb.encoder import Encoder
from mmeb.errors import ModelError
from mmeb.items import Item, Side
from mmeb.registry import load_model, model_entry, registered_models, resolve_factory

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY_ARGS = {"num_crops": 4, "vision_config": str(TINY_VISION)}


def load(name: str = "vlm2vec-phi35v", checkpoint: Path = PARITY, **options: Any) -> Encoder:
    return load_model(name, checkpoint=str(checkpoint), device="cpu", dtype="float32",
                      model_args={**TINY_ARGS, **options})


def items() -> list[Item]:
    return [
        Item(raw=r["text_mmeb"], text="", image_path=str(PARITY / r["image"]) if r["image"]
             else None, origin=f"phi3_v item {r['index']}")
        for r in parity_items()
    ]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load()


@pytest.fixture(scope="module")
def singles(encoder: Encoder) -> np.ndarray:
    return np.stack([encoder.encode([item], side=Side.QUERY)[0] for item in items()])


def test_mmeb_strings_are_what_vlm2vec_passed_to_its_processor() -> None:
    assert all(r["text_mmeb"] == r["text_model"] for r in parity_items())


def test_single_items_reproduce_vlm2vec(singles: np.ndarray) -> None:
    diff = np.abs(singles - np.load(PARITY / "expected.npy")).max(axis=1)
    assert diff.max() <= 1e-4, diff


def test_one_padded_batch_equals_item_by_item(encoder: Encoder, singles: np.ndarray) -> None:
    encoder.batch_size = 8  # type: ignore[attr-defined]
    batched = encoder.encode(items(), side=Side.TARGET)
    assert float(np.abs(batched - singles).max()) <= 1e-5


def test_config_records_what_shapes_the_vectors(encoder: Encoder) -> None:
    config = encoder.config  # type: ignore[attr-defined]
    assert config["family"] == "vlm2vec-phi35v"
    assert (config["checkpoint"], config["revision"][:6]) == (str(PARITY), "local-")
    assert (config["num_crops"], config["dtype"], config["attn_implementation"]) == (
        4, "float32", "sdpa")
    assert (config["vision_config"], config["max_length"]) == (str(TINY_VISION), 256)
    assert (config["image_resolution"], config["padding_side"]) == ("native", "right")
    assert config["lora_adapter"] is None
    assert encoder.dim == 64  # type: ignore[attr-defined]


def test_registry_pins_the_released_checkpoints_and_the_alias_follows() -> None:
    full, lora = model_entry("vlm2vec-phi35v"), model_entry("vlm2vec-phi35v-lora")
    assert (full.default_checkpoint, full.revision) == (
        "TIGER-Lab/VLM2Vec-Full", "e9afa98002097ac2471827ba23ea1f2ddd229480")
    assert (lora.default_checkpoint, lora.revision) == (
        "TIGER-Lab/VLM2Vec-LoRA", "7403b6327958071c1e33c822c7453adadccc7298")
    assert (full.paper_score, lora.paper_score) == (55.9, 60.1)
    assert model_entry("vlm2vec") is full
    assert registered_models()["vlm2vec"].label == "vlm2vec (alias of vlm2vec-phi35v)"
    assert resolve_factory("vlm2vec") is resolve_factory("vlm2vec-phi35v")

    from click.testing import CliRunner

    from mmeb.cli import main

    listing = CliRunner().invoke(main, ["models"]).output
    line = next(row for row in listing.splitlines() if row.startswith("vlm2vec (alias"))
    assert "TIGER-Lab/VLM2Vec-Full" in line
    assert " 55.9 " in line


@pytest.mark.parametrize(
    ("args", "message"),
    [({"num_crops": 0}, "num_crops must be a positive integer"),
     ({"max_length": 0}, "max_length must be a positive integer"),
     ({"vision_config": "/no/such/tower.json"}, "vision_config file not found"),
     ({"image_resolution": "4k"}, "unknown image_resolution")],
)
def test_bad_options_are_refused_before_loading(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_model("vlm2vec-phi35v", checkpoint="unused", model_args=args)


def test_hub_checkpoints_offline_are_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("vlm2vec-phi35v", "vlm2vec-phi35v-lora"):
        default = model_entry(name).default_checkpoint
        with pytest.raises(ModelError) as error:
            load_model(name, device="cpu")
        assert str(error.value) == (
            f"cannot load checkpoint {default} offline; pass --checkpoint DIR with a local copy "
            "or unset HF_HUB_OFFLINE"
        )
    # A local adapter whose base is a Hub id: the base is what cannot be fetched.
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "microsoft/Phi-3.5-vision-instruct"}))
    with pytest.raises(ModelError, match=r"cannot load checkpoint microsoft/Phi-3\.5-vision-"
                                         r"instruct offline"):
        load_model("vlm2vec-phi35v-lora", checkpoint=str(tmp_path), device="cpu")


# -- LoRA: base + adapter folder ---------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an adapter folder whose adapter_config.json names the parity folder as its base,
    the checkpoint PEFT's merge_and_unload gives)."""
    root = tmp_path_factory.mktemp("phi35v-lora")
    merged = make_adapter(root / "adapter", use_dora=True)
    config_file = root / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(PARITY)
    config_file.write_text(json.dumps(config))
    return root / "adapter", write_checkpoint(root / "merged", merged)


def test_lora_adapter_folder_equals_the_merged_model(adapter: tuple[Path, Path]) -> None:
    folder, merged = adapter
    lora = load("vlm2vec-phi35v-lora", folder)
    reference = load("vlm2vec-phi35v", merged)
    chosen = [items()[i] for i in (0, 5, 7)]
    got = lora.encode(chosen, side=Side.QUERY)
    assert float(np.abs(got - reference.encode(chosen, side=Side.QUERY)).max()) <= 1e-5
    base = load_model("vlm2vec-phi35v", checkpoint=str(PARITY), device="cpu", dtype="float32",
                      model_args=TINY_ARGS)
    assert float(np.abs(got - base.encode(chosen, side=Side.QUERY)).max()) > 1e-3
    config = lora.config  # type: ignore[attr-defined]
    assert (config["family"], config["base"], config["lora_adapter"]) == (
        "vlm2vec-phi35v-lora", str(PARITY), str(folder))


def test_the_base_option_overrides_the_adapters_and_must_exist(
    adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = adapter
    moved = tmp_path / "adapter"
    shutil.copytree(folder, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/training/machine/phi35v"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    encoder = load("vlm2vec-phi35v-lora", moved, base=str(PARITY))
    assert encoder.config["base"] == str(PARITY)  # type: ignore[attr-defined]
    with pytest.raises(ModelError, match="base model directory not found: /nowhere"):
        load("vlm2vec-phi35v-lora", moved, base="/nowhere")


class _Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("unpickled",))


def test_a_pickled_adapter_with_a_non_tensor_payload_is_refused(
    adapter: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    folder, _ = adapter
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(folder / "adapter_config.json", bad)
    first = next(iter(load_file(str(folder / "adapter_model.safetensors"))))
    torch.save({first: _Payload()}, bad / "adapter_model.bin")
    with pytest.raises(ModelError) as error:
        load("vlm2vec-phi35v-lora", bad)
    assert "\n" not in str(error.value)
    assert "adapter_model.bin" in str(error.value)
    assert "unpickled" not in capsys.readouterr().out


# -- mmeb run, end to end ---------------------------------------------------------------------

E2E_TASKS = "Sample-ShapeVQA,Sample-Caption-i2t"


@pytest.mark.parametrize("name", ["vlm2vec-phi35v", "vlm2vec"])
def test_mmeb_run_on_the_sample_suite(name: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mmeb.cli import main

    out = tmp_path / "results"
    args = ["run", "--model", name, "--checkpoint", str(PARITY), "--split", "sample",
            "--tasks", E2E_TASKS, "--limit", "3", "--device", "cpu",
            "--model-arg", f"vision_config={TINY_VISION}", "--output-dir", str(out),
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*/*.json"))
    assert sorted(f.stem for f in files) == sorted(E2E_TASKS.split(","))
    for file in files:
        doc = json.loads(file.read_text())
        adapter = doc["config"]["adapter"]
        assert (adapter["family"], adapter["checkpoint"]) == ("vlm2vec-phi35v", str(PARITY))
        assert (adapter["num_crops"], adapter["dtype"]) == (4, "float32")
        assert 0.0 <= doc["main_score"] <= 1.0
        assert doc["counts"]["rows"] == 3
