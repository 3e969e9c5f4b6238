"""MMEB's text conventions: image placeholder, instruction layout, backbone image tokens.

MMEB-eval v1 stores each side of a pair as one string that already contains the instruction,
e.g. ``"<|image_1|>\\nRepresent the given image with the following question: What is it?\\n"``.
VLM adapters need that string byte for byte (only the image token swapped); CLIP-family
adapters need the parts. This module is the single place that builds and splits such strings.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The Phi-3.5-V image token hard-coded in MMEB data.
IMAGE_PLACEHOLDER = "<|image_1|>"

#: Image tokens of the backbones VLM2Vec was trained on (VLM2Vec ``vlm_image_tokens``).
BACKBONE_IMAGE_TOKENS = {
    "phi3_v": "<|image_1|>",
    "llava_next": "<image>",
    "qwen2_vl": "<|image_pad|>",
    "qwen2_5_vl": "<|image_pad|>",
}


@dataclass(frozen=True)
class ParsedText:
    """The parts of a raw MMEB string."""

    instruction: str | None  # None when the string carries no (recognised) instruction
    text: str  # the content after the instruction, without placeholder and trailing newline
    has_placeholder: bool  # the string contains the image placeholder (even without an image)


def compose(instruction: str | None, text: str, *, has_image: bool) -> str:
    """Build a raw string in MMEB-eval v1 layout.

    Image inputs: ``<|image_1|>\\n{instruction}[ {text}]\\n``; text inputs with an instruction:
    ``{instruction} {text}\\n``; bare text candidates (class names, answers, captions): ``text``.
    """
    if instruction is None:
        return f"{IMAGE_PLACEHOLDER}\n{text}\n" if has_image else text
    body = f"{instruction} {text}" if text else instruction
    return f"{IMAGE_PLACEHOLDER}\n{body}\n" if has_image else f"{body}\n"


def parse(raw: str, instruction: str | None) -> ParsedText:
    """Split a raw MMEB string into instruction and text.

    ``instruction`` is the task's known instruction for this side; when the string does not
    start with it the instruction is reported as None and the whole body is the text, so that
    nothing is silently dropped.
    """
    body = raw
    has_placeholder = IMAGE_PLACEHOLDER in body
    if body.startswith(IMAGE_PLACEHOLDER):
        body = body[len(IMAGE_PLACEHOLDER) :].lstrip(" \n")
    body = body.rstrip("\n")
    if instruction and body.startswith(instruction):
        return ParsedText(instruction, body[len(instruction) :].strip(), has_placeholder)
    return ParsedText(None, body.strip(), has_placeholder)


def swap_image_token(raw: str, token: str) -> str:
    """Replace MMEB's placeholder with a backbone's image token, leaving every other byte."""
    return raw.replace(IMAGE_PLACEHOLDER, token)
