"""The registry against the reference table of MMEB-v1 (tests/data, taken from the paper/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmeb.errors import MMEBError
from mmeb.instructions import compose, parse
from mmeb.tasks import MMEB_V1_TASKS, get_task, select_tasks

REFERENCE_FILE = Path(__file__).parent / "data" / "mmeb_v1_tasks_reference.json"
REFERENCE = json.loads(REFERENCE_FILE.read_text())


def test_registry_has_the_36_datasets_in_reference_order():
    assert [t.name for t in MMEB_V1_TASKS] == [r["name"] for r in REFERENCE]


@pytest.mark.parametrize("ref", REFERENCE, ids=[r["name"] for r in REFERENCE])
def test_registry_matches_reference_field_by_field(ref):
    task = get_task(ref["name"])
    assert task.meta_task == ref["meta_task"]
    assert task.role == ref["split_role"]
    assert task.query_modality == ref["query_modality"]
    assert task.target_modality == ref["target_modality"]
    assert task.query_instruction == ref["eval_query_instruction"]
    assert task.target_instruction == ref["eval_target_instruction"]
    assert task.train_query_instruction == ref["train_query_instruction"]
    assert task.num_queries == ref["num_eval_queries"]
    assert task.num_candidates == ref["candidates_per_query"]
    assert (task.hf_dataset, task.hf_config, task.file_prefix) == (
        ref["hf_eval"]["dataset"], ref["hf_eval"]["config"], ref["hf_eval"]["split"])
    assert task.train_config == ref["train_config"]


@pytest.mark.parametrize("ref", REFERENCE, ids=[r["name"] for r in REFERENCE])
def test_real_example_strings_parse_into_instruction_and_text(ref):
    """Each task's real query string starts with the registered instruction."""
    task = get_task(ref["name"])
    raw = ref["example"]["query"]
    parsed = parse(raw, task.query_instruction)
    assert parsed.instruction == task.query_instruction
    assert parsed.has_placeholder == (task.query_modality != "text")
    # composing the parts back gives the original bytes, trailing newline included
    has_image = task.query_modality != "text"
    assert compose(parsed.instruction, parsed.text, has_image=has_image) == raw


def test_collections_have_the_papers_sizes():
    sizes = {name: len(select_tasks(name)) for name in
             ("eval", "ind", "ood", "classification", "vqa", "retrieval", "grounding")}
    assert sizes == {"eval": 36, "ind": 20, "ood": 16, "classification": 10, "vqa": 10,
                     "retrieval": 12, "grounding": 4}
    assert {t.role for t in select_tasks("ind")} == {"IND"}
    assert all(t.train_config for t in select_tasks("ind"))
    assert not any(t.train_config for t in select_tasks("ood"))


def test_selection_by_names_and_meta_task():
    assert [t.name for t in select_tasks(None, ["CIRR", "imagenet-1k"])] == ["CIRR", "ImageNet-1K"]
    assert {t.meta_task for t in select_tasks("ood", None, "vqa")} == {"vqa"}


def test_unknown_task_lists_valid_names():
    with pytest.raises(MMEBError, match=r"unknown task 'ImageNet'.*ImageNet-1K"):
        get_task("ImageNet")


def test_unknown_split_lists_valid_splits():
    with pytest.raises(MMEBError, match="valid splits: eval, ind, ood"):
        select_tasks("dev")
