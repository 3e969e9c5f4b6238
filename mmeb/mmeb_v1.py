"""MMEB v1: the 36 evaluation datasets of the VLM2Vec paper as one declarative table.

Names are the exact config names of ``TIGER-Lab/MMEB-eval``. Instructions are the strings found
in the data (quirks included, e.g. MSCOCO's "to to"); the train variant is the instruction of the
``original`` split of ``TIGER-Lab/MMEB-train``, where the dataset has one (IND datasets only).
"""

from __future__ import annotations

from mmeb.taskspec import TaskSpec

MMEB_EVAL_DATASET = "TIGER-Lab/MMEB-eval"
MMEB_TRAIN_DATASET = "TIGER-Lab/MMEB-train"
#: Last data change of TIGER-Lab/MMEB-eval ("Delete wrong image (#2)"); results record it.
MMEB_EVAL_REVISION = "2f069730be515ea60778413777816b53e2d2a697"


def _v1(
    name: str,
    meta_task: str,
    role: str,
    query_modality: str,
    target_modality: str,
    query_instruction: str | None,
    target_instruction: str | None,
    train_query_instruction: str | None,
    num_candidates: int,
    train_config: str | None,
) -> TaskSpec:
    return TaskSpec(
        name=name,
        meta_task=meta_task,
        role=role,
        query_modality=query_modality,
        target_modality=target_modality,
        query_instruction=query_instruction,
        target_instruction=target_instruction,
        train_query_instruction=train_query_instruction,
        num_candidates=num_candidates,
        source="hub",
        hf_dataset=MMEB_EVAL_DATASET,
        hf_config=name,
        hf_revision=MMEB_EVAL_REVISION,
        train_config=train_config,
    )


# fmt: off
MMEB_V1_TASKS: tuple[TaskSpec, ...] = (
    _v1('ImageNet-1K', 'classification', 'IND', 'image', 'text', 'Represent the given image for classification', None, 'Represent the given image for classification.', 1000, 'ImageNet_1K'),
    _v1('N24News', 'classification', 'IND', 'image+text', 'text', 'Represent the given news image with the following caption for domain classification:', None, 'Represent the given news image with the following caption for domain classification:', 24, 'N24News'),
    _v1('HatefulMemes', 'classification', 'IND', 'image', 'text', 'Represent the given image for binary classification to determine whether it constitutes hateful speech or not', None, 'Represent the given image for binary classification to determine whether it constitutes hateful speech or not.', 2, 'HatefulMemes'),
    _v1('VOC2007', 'classification', 'IND', 'image', 'text', 'Identify the object shown in the image', None, 'Identify the object shown in the image', 20, 'VOC2007'),
    _v1('SUN397', 'classification', 'IND', 'image', 'text', 'Identify the scene shown in the image', None, 'Identify the scene shown in the image.', 397, 'SUN397'),
    _v1('Place365', 'classification', 'OOD', 'image', 'text', 'Identify the scene shown in the image', None, None, 365, None),
    _v1('ImageNet-A', 'classification', 'OOD', 'image', 'text', 'Represent the given image for classification', None, None, 1000, None),
    _v1('ImageNet-R', 'classification', 'OOD', 'image', 'text', 'Represent the given image for classification', None, None, 200, None),
    _v1('ObjectNet', 'classification', 'OOD', 'image', 'text', 'Identify the object shown in the image', None, None, 313, None),
    _v1('Country211', 'classification', 'OOD', 'image', 'text', 'Identify the country depicted in the image', None, None, 211, None),
    _v1('OK-VQA', 'vqa', 'IND', 'image+text', 'text', 'Represent the given image with the following question:', None, 'Represent the given image with the following question:', 1000, 'OK-VQA'),
    _v1('A-OKVQA', 'vqa', 'IND', 'image+text', 'text', 'Represent the given image with the following question:', None, 'Represent the given image with the following question:', 1000, 'A-OKVQA'),
    _v1('DocVQA', 'vqa', 'IND', 'image+text', 'text', 'Represent the given image with the following question:', None, 'Represent the given image with the following question:', 1000, 'DocVQA'),
    _v1('InfographicsVQA', 'vqa', 'IND', 'image+text', 'text', 'Represent the given image with the following question:', None, 'Represent the given image with the following question:', 1000, 'InfographicsVQA'),
    _v1('ChartQA', 'vqa', 'IND', 'image+text', 'text', 'Represent the given image with the following question:', None, 'Represent the given image with the following question:', 1000, 'ChartQA'),
    _v1('Visual7W', 'vqa', 'IND', 'image+text', 'text', 'Represent the given image with the following question:', None, 'Represent the given image with the following question:', 1000, 'Visual7W'),
    _v1('ScienceQA', 'vqa', 'OOD', 'image+text', 'text', 'Represent the given image with the following question:', None, None, 1000, None),
    _v1('VizWiz', 'vqa', 'OOD', 'image+text', 'text', 'Represent the given image with the following question:', None, None, 1000, None),
    _v1('GQA', 'vqa', 'OOD', 'image+text', 'text', 'Represent the given image with the following question:', None, None, 1000, None),
    _v1('TextVQA', 'vqa', 'OOD', 'image+text', 'text', 'Represent the given image with the following question:', None, None, 1000, None),
    _v1('VisDial', 'retrieval', 'IND', 'text', 'image', 'Represent the given dialogue about an image, which is used for image retrieval:', 'Represent the given image', 'Represent the given dialogue about an image, which is used for image retrieval:', 1000, 'VisDial'),
    _v1('CIRR', 'retrieval', 'IND', 'image+text', 'image', 'Given an image, find a similar everyday image with the described changes:', 'Represent the given image.', 'Given an image, find a similar everyday image with the described changes:', 1000, 'CIRR'),
    _v1('VisualNews_t2i', 'retrieval', 'IND', 'text', 'image', 'Retrieve an image of this news caption.', 'Represent the given image.', 'Retrieve an image of this news caption.', 1000, 'VisualNews_t2i'),
    _v1('VisualNews_i2t', 'retrieval', 'IND', 'image', 'text', 'Find a caption for the news in the given photo.', None, 'Find a caption for the news in the given photo.', 1000, 'VisualNews_i2t'),
    _v1('MSCOCO_t2i', 'retrieval', 'IND', 'text', 'image', 'Find me an everyday image that matches the given caption:', 'Represent the given image.', 'Find me an everyday image that matches the given caption:', 1000, 'MSCOCO_t2i'),
    _v1('MSCOCO_i2t', 'retrieval', 'IND', 'image', 'text', 'Find an image caption describing the given everyday image.', None, 'Find an image caption describing the given everyday image.', 1000, 'MSCOCO_i2t'),
    _v1('NIGHTS', 'retrieval', 'IND', 'image', 'image', 'Find a day-to-day image that looks similar to the provided image.', 'Represent the given image.', 'Find a day-to-day image that looks similar to the provided image.', 1000, 'NIGHTS'),
    _v1('WebQA', 'retrieval', 'IND', 'text', 'image+text', 'Find a Wikipedia image that answers this question:', 'Represent the given Wikipedia image with related text information:', 'Find a Wikipedia image that answers this question:', 1000, 'WebQA'),
    _v1('FashionIQ', 'retrieval', 'OOD', 'image+text', 'image', 'Find an image to match the fashion image and style note:', 'Represent the given image.', None, 1000, None),
    _v1('Wiki-SS-NQ', 'retrieval', 'OOD', 'text', 'image', 'Find the document image that can answer the given query:', 'Represent the given image', None, 1000, None),
    _v1('OVEN', 'retrieval', 'OOD', 'image+text', 'image+text', 'Retrieve a Wikipedia image-description pair that provides evidence for the question of this image:', 'Represent the given Wikipedia image with related text information:', None, 1000, None),
    _v1('EDIS', 'retrieval', 'OOD', 'text', 'image+text', 'Find a news image that matches the provided caption:', 'Represent the given image with related text information:', None, 1000, None),
    _v1('MSCOCO', 'grounding', 'IND', 'image+text', 'image', 'Crop the image to to isolate the object labeled as', 'Represent the given cropped image of the object.', 'Select the portion of the image that isolates the object labeled as', 1000, 'MSCOCO'),
    _v1('RefCOCO', 'grounding', 'OOD', 'image+text', 'image', 'Select the portion of the image that follows the language expressions.', 'Represent the given cropped image of the object.', None, 1000, None),
    _v1('RefCOCO-Matching', 'grounding', 'OOD', 'image+text', 'image+text', 'Select the portion of the image that follows the language expressions:', 'Select the portion of the image that follows the language expressions:', None, 1000, None),
    _v1('Visual7W-Pointing', 'grounding', 'OOD', 'image+text', 'image', 'Select the portion of the image that answers the question', 'Represent the given cropped image of the object.', None, 1000, None),
)
# fmt: on
