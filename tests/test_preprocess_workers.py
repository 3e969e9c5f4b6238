"""Preprocessing in DataLoader workers (``--model-arg workers=N``) changes no vector."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from tiny_checkpoints import checkpoint, image_item, text_item, vqa_item, write_images
from tiny_vlm import QWEN2VL, parity_items

from mmeb.engine import encode_in_batches
from mmeb.errors import DataError, ModelError
from mmeb.items import Item, Side
from mmeb.prefetch import preprocess_workers
from mmeb.registry import load_model
from mmeb.tasks import get_task

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TASK = get_task("OK-VQA")


@pytest.fixture(scope="module")
def qwen2vl():  # -> the Qwen2-VL adapter on the tiny parity checkpoint
    return load_model("vlm2vec-qwen2vl-2b", checkpoint=str(QWEN2VL), device="cpu",
                      dtype="float32", model_args={"image_resolution": "native",
                                                   "batch_size": 2})


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory):  # -> a tiny CLIP, preprocessing in workers
    return load_model("clip", checkpoint=str(checkpoint("clip", tmp_path_factory)),
                      device="cpu", model_args={"workers": 2, "batch_size": 2})


@pytest.fixture(scope="module")
def clip_items(tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    paths = write_images(tmp_path_factory.mktemp("images"))
    return [text_item("a photo of a cat"), image_item(paths[0]), vqa_item(paths[1], "what?"),
            text_item("a red square"), image_item(paths[2]), vqa_item(paths[0], "colour?"),
            text_item("blue")]


def engine_vectors(encoder: object, items: list[Item], workers: int, side: Side) -> np.ndarray:
    encoder.preprocess_workers = workers  # type: ignore[attr-defined]
    return encode_in_batches(encoder, items, side=side, task=TASK,  # type: ignore[arg-type]
                             batch_size=3, progress=False)


@pytest.mark.parametrize("side", [Side.QUERY, Side.TARGET])
def test_qwen2vl_vectors_are_identical_with_and_without_workers(qwen2vl, side):
    items = parity_items(QWEN2VL)
    in_process = engine_vectors(qwen2vl, items, 0, side)
    in_workers = engine_vectors(qwen2vl, items, 2, side)
    assert in_process.shape == (8, qwen2vl.dim)
    np.testing.assert_array_equal(in_workers, in_process)


def test_clip_vectors_are_identical_with_and_without_workers(clip, clip_items):
    assert clip.preprocess_workers == 2  # from --model-arg workers=2
    in_workers = engine_vectors(clip, clip_items, 2, Side.QUERY)
    in_process = engine_vectors(clip, clip_items, 0, Side.QUERY)
    assert in_process.shape[0] == len(clip_items)
    np.testing.assert_array_equal(in_workers, in_process)


@pytest.mark.parametrize("name", ["qwen2vl", "clip"])
def test_the_preprocess_step_pickles_without_the_model(name, request, clip_items):
    encoder = request.getfixturevalue(name)
    items = parity_items(QWEN2VL) if name == "qwen2vl" else clip_items
    step = encoder.preprocessor(side=Side.QUERY, task=TASK)
    assert encoder.model is not None
    assert step.adapter.model is None
    assert not any(isinstance(v, torch.nn.Module) for v in vars(step.adapter).values())
    copy = pickle.loads(pickle.dumps(step))
    np.testing.assert_array_equal(encoder.encode_prepared(copy(items)),
                                  encoder.encode(items, side=Side.QUERY, task=TASK))


def test_an_unreadable_image_in_a_worker_is_the_usual_one_line_error(clip, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    items = [text_item("fine"), Item(raw="<|image_1|>\n", text="", image_path=str(broken),
                                     origin="OK-VQA row 7 query")]
    with pytest.raises(DataError, match=r"^OK-VQA row 7 query: cannot read image [^\n]*$"):
        engine_vectors(clip, items, 2, Side.QUERY)


def test_workers_must_be_a_count(tmp_path_factory):
    folder = str(checkpoint("clip", tmp_path_factory))
    with pytest.raises(ModelError, match="workers must be 0"):
        load_model("clip", checkpoint=folder, device="cpu", model_args={"workers": -1})
    plain = load_model("clip", checkpoint=folder, device="cpu")
    assert preprocess_workers(plain) == 0
    assert preprocess_workers(object()) == 0
