"""Fusion and instruction policies, and the shared option checks, without any model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mmeb.errors import ModelError
from mmeb.items import Item
from mmeb.models.base import encoder_name, parse_batch_size, resolve_device, resolve_dtype
from mmeb.models.fusion import Fusion, assemble, combine, parse_fusion, parts_used
from mmeb.models.two_tower import InstructionPolicy, model_text, parse_instruction_policy

IMAGE = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
TEXT = np.array([[0.0, 2.0], [0.0, -5.0]], dtype=np.float32)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Fusion.SUM, [[3.0, 6.0], [1.0, -5.0]]),
        (Fusion.SUM_NORMALIZED, [[0.6, 1.8], [1.0, -1.0]]),
        (Fusion.MEAN, [[1.5, 3.0], [0.5, -2.5]]),
        (Fusion.IMAGE, [[3.0, 4.0], [1.0, 0.0]]),
        (Fusion.TEXT, [[0.0, 2.0], [0.0, -5.0]]),
    ],
)
def test_combine_computes_what_the_policy_name_says(policy: Fusion, expected: list) -> None:
    np.testing.assert_allclose(combine(policy, IMAGE, TEXT), expected, rtol=1e-6)


def test_sum_normalized_survives_a_zero_vector() -> None:
    out = combine(Fusion.SUM_NORMALIZED, np.zeros((1, 2), np.float32), TEXT[:1])
    np.testing.assert_allclose(out, [[0.0, 1.0]])


@pytest.mark.parametrize("policy", list(Fusion))
def test_single_part_items_use_that_part_whatever_the_policy(policy: Fusion) -> None:
    assert parts_used(policy, has_image=True, has_text=False) == (True, False)
    assert parts_used(policy, has_image=False, has_text=True) == (False, True)
    # A text item with empty text still needs a vector: its (empty) text.
    assert parts_used(policy, has_image=False, has_text=False) == (False, True)


def test_image_and_text_policies_skip_the_other_tower() -> None:
    assert parts_used(Fusion.IMAGE, has_image=True, has_text=True) == (True, False)
    assert parts_used(Fusion.TEXT, has_image=True, has_text=True) == (False, True)
    for policy in (Fusion.SUM, Fusion.SUM_NORMALIZED, Fusion.MEAN):
        assert parts_used(policy, has_image=True, has_text=True) == (True, True)


def test_assemble_places_single_parts_and_fuses_rows_with_both() -> None:
    image_rows, text_rows = [0, 2], [1, 2]
    image = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)
    text = np.array([[5.0, 5.0], [0.0, 3.0]], np.float32)
    out = assemble(Fusion.SUM, 3, image_rows, image, text_rows, text)
    np.testing.assert_array_equal(out, [[1.0, 1.0], [5.0, 5.0], [2.0, 3.0]])
    assert out.dtype == np.float32


def test_assemble_with_one_tower_only() -> None:
    out = assemble(Fusion.SUM, 2, [], np.zeros((0, 0), np.float32), [0, 1], TEXT)
    np.testing.assert_array_equal(out, TEXT)


def test_assemble_refuses_towers_of_different_sizes() -> None:
    with pytest.raises(ModelError, match="differ in size"):
        assemble(Fusion.SUM, 1, [0], np.ones((1, 3), np.float32), [0], np.ones((1, 2), np.float32))


def test_policy_names_are_checked() -> None:
    assert parse_fusion("sum_normalized") is Fusion.SUM_NORMALIZED
    assert parse_fusion(None) is Fusion.SUM
    with pytest.raises(ModelError, match="sum, sum_normalized, mean, image, text"):
        parse_fusion("concat")
    # The registry turns "--model-arg instruction=none" into None.
    assert parse_instruction_policy(None) is InstructionPolicy.NONE
    assert parse_instruction_policy("prepend") is InstructionPolicy.PREPEND
    with pytest.raises(ModelError, match="none, prepend"):
        parse_instruction_policy("append")


def test_instruction_policy_decides_the_text() -> None:
    instruction = "Represent the given image with the following question:"
    vqa = Item(raw=f"<|image_1|>\n{instruction} what?\n", text="what?", instruction=instruction,
               image_path="x.jpg")
    assert model_text(vqa, InstructionPolicy.NONE) == "what?"
    assert model_text(vqa, InstructionPolicy.PREPEND) == f"{instruction} what?"
    # An image with only an instruction gets the instruction as its text under "prepend".
    bare = Item(raw="<|image_1|>\nRepresent the given image.\n", text="",
                instruction="Represent the given image.", image_path="x.jpg")
    assert model_text(bare, InstructionPolicy.NONE) == ""
    assert model_text(bare, InstructionPolicy.PREPEND) == "Represent the given image."
    candidate = Item(raw="a cat", text="a cat")
    assert model_text(candidate, InstructionPolicy.PREPEND) == "a cat"


def test_cuda_without_a_gpu_is_refused_up_front() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ModelError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("gpu0")


def test_shared_options_are_checked() -> None:
    assert resolve_dtype(None) == "float32"
    assert resolve_dtype("bf16") == "bfloat16"
    with pytest.raises(ModelError, match="float32, float16, bfloat16"):
        resolve_dtype("int8")
    assert parse_batch_size(8) == 8
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ModelError, match="batch_size"):
            parse_batch_size(bad)


@pytest.mark.parametrize(
    ("family", "checkpoint", "name"),
    [
        ("clip", "openai/clip-vit-large-patch14", "clip-vit-large-patch14"),
        ("openclip", "hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
         "openclip-CLIP-ViT-H-14-laion2B-s32B-b79K"),
        ("blip2", "Salesforce/blip2-itm-vit-g", "blip2-itm-vit-g"),
        ("siglip", "/data/ckpt/my model/", "siglip-my-model"),
    ],
)
def test_encoder_names_are_short_and_file_safe(family: str, checkpoint: str, name: str) -> None:
    assert encoder_name(family, checkpoint) == name


def test_adapter_modules_import_without_model_libraries() -> None:
    code = (
        "import sys, mmeb.models.clip, mmeb.models.openclip, mmeb.models.siglip, "
        "mmeb.models.blip, mmeb.models.blip2; "
        "print(sorted(m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
