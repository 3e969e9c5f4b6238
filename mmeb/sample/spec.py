"""Task records of the sample suite, and of its MMEB-sized twin.

Pure data: importing this module loads no image or table library, so the task registry can list
the sample tasks cheaply. ``SAMPLE_KINDS`` / ``FULL_KINDS`` name the generator (in
``mmeb.sample.datasets``) that writes each task.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from mmeb.mmeb_v1 import MMEB_V1_TASKS
from mmeb.taskspec import TaskSpec

_VQA = "Represent the given image with the following question:"
_IMAGE = "Represent the given image."
_CARD = "Represent the given card image with related text information:"
_CROP = "Represent the given cropped image of the object."
_REFER = "Select the portion of the image that follows the language expressions."
_MATCH = "Select the portion of the image that follows the language expressions:"

#: Queries per task at the default (small) scale.
SAMPLE_QUERIES = 150
#: Bump when the generator's output changes: cached copies are keyed by it.
SAMPLE_VERSION = "v1"
#: Written last by the generator: a copy is complete exactly when it has this file.
MANIFEST = "manifest.json"
#: ``small`` is the offline suite, ``full`` its MMEB-sized twin.
SCALES = ("small", "full")


def _sample(
    name: str,
    kind: str,
    meta_task: str,
    query_modality: str,
    target_modality: str,
    query_instruction: str,
    target_instruction: str | None,
    num_candidates: int,
) -> tuple[TaskSpec, str]:
    spec = TaskSpec(
        name=name,
        meta_task=meta_task,
        role="IND",  # every sample task has training pairs
        query_modality=query_modality,
        target_modality=target_modality,
        query_instruction=query_instruction,
        target_instruction=target_instruction,
        train_query_instruction=query_instruction,
        num_candidates=num_candidates,
        num_queries=SAMPLE_QUERIES,
        source="sample",
        hf_config=name,
        train_config=name,
        benchmark="sample",
    )
    return spec, kind


# fmt: off
_SAMPLE = (
    _sample("Sample-Shapes", "shapes", "classification", "image", "text",
            "Identify the object shown in the image", None, 64),
    _sample("Sample-Words", "words", "classification", "image", "text",
            "Identify the word written in the image", None, 64),
    _sample("Sample-ShapeVQA", "shape_vqa", "vqa", "image+text", "text", _VQA, None, 50),
    _sample("Sample-WordVQA", "word_vqa", "vqa", "image+text", "text", _VQA, None, 50),
    _sample("Sample-Caption-t2i", "caption_t2i", "retrieval", "text", "image",
            "Find me an image of shapes that matches the given caption:", _IMAGE, 100),
    _sample("Sample-Caption-i2t", "caption_i2t", "retrieval", "image", "text",
            "Find an image caption describing the given image of shapes.", None, 100),
    _sample("Sample-NearDup", "near_dup", "retrieval", "image", "image",
            "Find an image of shapes that looks similar to the provided image.", _IMAGE, 100),
    _sample("Sample-Edit", "edit", "retrieval", "image+text", "image",
            "Given an image, find a similar image of shapes with the described changes:",
            _IMAGE, 100),
    _sample("Sample-Cards-t2it", "cards_t2it", "retrieval", "text", "image+text",
            "Find a card image that answers this question:", _CARD, 100),
    _sample("Sample-Cards-it2it", "cards_it2it", "retrieval", "image+text", "image+text",
            "Retrieve a card image-description pair that provides evidence for the question of "
            "this image:", _CARD, 100),
    _sample("Sample-Grounding", "grounding", "grounding", "image+text", "image",
            _REFER, _CROP, 60),
    _sample("Sample-Matching", "matching", "grounding", "image+text", "image+text",
            _MATCH, _MATCH, 60),
)
# fmt: on

SAMPLE_TASKS: tuple[TaskSpec, ...] = tuple(spec for spec, _ in _SAMPLE)
SAMPLE_KINDS: dict[str, str] = {spec.name: kind for spec, kind in _SAMPLE}

#: The generator that stands in for each MMEB-v1 dataset (same meta-task and modality pair).
FULL_KINDS: dict[str, str] = {
    "ImageNet-1K": "shapes", "N24News": "shape_vqa", "HatefulMemes": "shapes",
    "VOC2007": "words", "SUN397": "shapes", "Place365": "shapes", "ImageNet-A": "shapes",
    "ImageNet-R": "shapes", "ObjectNet": "words", "Country211": "words",
    "OK-VQA": "shape_vqa", "A-OKVQA": "shape_vqa", "DocVQA": "word_vqa",
    "InfographicsVQA": "word_vqa", "ChartQA": "word_vqa", "Visual7W": "shape_vqa",
    "ScienceQA": "shape_vqa", "VizWiz": "shape_vqa", "GQA": "shape_vqa", "TextVQA": "word_vqa",
    "VisDial": "caption_t2i", "CIRR": "edit", "VisualNews_t2i": "caption_t2i",
    "VisualNews_i2t": "caption_i2t", "MSCOCO_t2i": "caption_t2i", "MSCOCO_i2t": "caption_i2t",
    "NIGHTS": "near_dup", "WebQA": "cards_t2it", "FashionIQ": "edit",
    "Wiki-SS-NQ": "caption_t2i", "OVEN": "cards_it2it", "EDIS": "cards_t2it",
    "MSCOCO": "grounding", "RefCOCO": "grounding", "RefCOCO-Matching": "matching",
    "Visual7W-Pointing": "grounding",
}
FULL_PREFIX = "Full-"


@cache
def full_tasks() -> tuple[TaskSpec, ...]:
    """The MMEB-sized twin: one "Full-<name>" task per MMEB-v1 dataset, with its instructions,
    IND/OOD split, modality pair, 1000 queries and its candidate count (benchmarks only; not in
    the ``sample`` collection)."""
    return tuple(
        replace(
            task,
            name=FULL_PREFIX + task.name,
            hf_dataset=None,
            source="sample-full",
            hf_config=FULL_PREFIX + task.name,
            hf_revision=None,
            train_config=FULL_PREFIX + task.name if task.train_config else None,
            benchmark="sample",
        )
        for task in MMEB_V1_TASKS
    )


def kind_of(task: TaskSpec) -> str:
    """The generator that writes ``task`` (a sample task or one of the full-size twins)."""
    if task.name in SAMPLE_KINDS:
        return SAMPLE_KINDS[task.name]
    return _FULL_KINDS_BY_NAME[task.name]


_FULL_KINDS_BY_NAME = {FULL_PREFIX + name: kind for name, kind in FULL_KINDS.items()}


def scale_of(task: TaskSpec) -> str:
    """Which cached copy holds ``task``: the twins live in the ``full`` one."""
    return "full" if task.source == "sample-full" else "small"
