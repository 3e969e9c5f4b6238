"""VLM2Vec parity: our Qwen2-VL and LLaVA-NeXT adapters reproduce VLM2Vec v1.0's embeddings.

The references in ``tests/data/parity`` were computed by VLM2Vec's own code on these tiny
checkpoints (fp32, CPU, one item per call). The adapters load them through the public path a
real checkpoint takes. With the default ``pixel_pipeline=transformers4`` every image gets the
reference's pixel values (checked against the folders' ``pixel_values_sum``) and every vector
agrees to fp32 noise. transformers 5's own PIL processors under current Pillow change a few
pixels of some images (Pillow's resampling pass order, LLaVA-NeXT's anyres padding); those
vectors stay within 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_vlm import LLAVA_NEXT, QWEN2VL, parity_items

from mmeb.encoder import Encoder
from mmeb.items import Item, Side
from mmeb.registry import load_model

pytest.importorskip("transformers")

CASES = {"vlm2vec-qwen2vl-2b": QWEN2VL, "vlm2vec-llava-next": LLAVA_NEXT}
TOLERANCE = 1e-3  # after L2 normalisation, where the image processors differ
FP32_NOISE = 1e-5  # where inputs are identical


@pytest.fixture(scope="module", params=sorted(CASES))
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def folder(model: str) -> Path:
    return CASES[model]


def load(model: str, folder: Path, **options: object) -> Encoder:
    return load_model(model, checkpoint=str(folder), device="cpu", dtype="float32",
                      model_args={"image_resolution": "native", **options})


@pytest.fixture(scope="module")
def encoder(model: str, folder: Path) -> Encoder:
    return load(model, folder)


@pytest.fixture(scope="module")
def items(folder: Path) -> list[Item]:
    return parity_items(folder)


@pytest.fixture(scope="module")
def singles(encoder: Encoder, items: list[Item]) -> np.ndarray:
    return np.stack([encoder.encode([item], side=Side.QUERY)[0] for item in items])


def records(folder: Path) -> list[dict]:
    return json.loads((folder / "inputs.json").read_text())["items"]  # type: ignore[no-any-return]


def same_pixels(encoder: Encoder, item: Item, record: dict) -> bool:
    if record["image"] is None:
        return True
    pixels = encoder._prepare(item, side=Side.QUERY, task=None)["pixel_values"]  # type: ignore[attr-defined]
    # Equal pixels give equal float64 sums to ~1e-9; one changed pixel moves the sum by ~1e-3.
    return bool(abs(float(pixels.double().sum()) - record["pixel_values_sum"]) < 1e-6)


def test_single_items_reproduce_vlm2vec(
    encoder: Encoder, folder: Path, items: list[Item], singles: np.ndarray
) -> None:
    for item, record in zip(items, records(folder), strict=True):
        assert same_pixels(encoder, item, record), record["index"]
    diff = np.abs(singles - np.load(folder / "expected.npy")).max(axis=1)
    assert diff.max() <= FP32_NOISE, diff


def test_transformers5_pixels_stay_within_tolerance(
    model: str, folder: Path, items: list[Item], singles: np.ndarray
) -> None:
    current = load(model, folder, pixel_pipeline="transformers5")
    got = np.stack([current.encode([item], side=Side.QUERY)[0] for item in items])
    assert np.abs(got - np.load(folder / "expected.npy")).max() <= TOLERANCE
    text_rows = [i for i, item in enumerate(items) if not item.has_image]
    assert np.abs(got[text_rows] - singles[text_rows]).max() <= FP32_NOISE


def test_processor_gives_vlm2vec_token_ids(
    encoder: Encoder, folder: Path, items: list[Item]
) -> None:
    for item, record in zip(items, records(folder), strict=True):
        ids = encoder._prepare(item, side=Side.QUERY, task=None)["input_ids"].tolist()  # type: ignore[attr-defined]
        runs: list[list[int]] = []
        for token in ids:
            if runs and runs[-1][0] == token:
                runs[-1][1] += 1
            else:
                runs.append([token, 1])
        assert runs == record["input_ids_rle"], record["index"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_one_padded_batch_equals_items_one_by_one(
    model: str, folder: Path, items: list[Item], singles: np.ndarray, side: str
) -> None:
    # Text-only rows first: the order in which VLM2Vec's own LLaVA-NeXT batches went wrong.
    batched = load(model, folder, padding_side=side, batch_size=len(items))
    assert np.abs(batched.encode(items, side=Side.QUERY) - singles).max() <= FP32_NOISE
    pairs = load(model, folder, padding_side=side, batch_size=3)
    shuffled = [items[i] for i in (5, 0, 7, 2, 3, 6, 1, 4)]
    got = pairs.encode(shuffled, side=Side.TARGET)
    assert np.abs(got - singles[[5, 0, 7, 2, 3, 6, 1, 4]]).max() <= FP32_NOISE


def test_config_records_the_settings(encoder: Encoder, model: str, folder: Path) -> None:
    config = encoder.config  # type: ignore[attr-defined]
    json.dumps(config)
    assert (config["family"], config["checkpoint"]) == (model, str(folder))
    assert (config["image_resolution"], config["pooling"], config["normalize"]) == (
        "native", "last", True)
    assert config["dtype"] == "float32"
    assert config["lora_adapter"] is None
    assert config["pixel_pipeline"] == "transformers4"
    assert config["image_processor"].endswith("PilTransformers4")
