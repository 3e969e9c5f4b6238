from __future__ import annotations

from mmeb.instructions import BACKBONE_IMAGE_TOKENS, compose, parse, swap_image_token


def test_compose_follows_mmeb_layouts():
    assert compose("Represent the given image with the following question:", "What is it?",
                   has_image=True) == (
        "<|image_1|>\nRepresent the given image with the following question: What is it?\n")
    assert compose("Retrieve an image of this news caption.", "A save.", has_image=False) == (
        "Retrieve an image of this news caption. A save.\n")
    assert compose("Represent the given image.", "", has_image=True) == (
        "<|image_1|>\nRepresent the given image.\n")
    assert compose(None, "Italian greyhound", has_image=False) == "Italian greyhound"


def test_parse_keeps_unknown_instructions_as_text():
    parsed = parse("<|image_1|>\nSomething else entirely: x\n", "Represent the given image")
    assert parsed.instruction is None
    assert parsed.text == "Something else entirely: x"


def test_parse_orphan_placeholder_of_text_only_query():
    # WebQA/EDIS rows carry <|image_1|> although the query has no image.
    raw = "<|image_1|>\nFind a Wikipedia image that answers this question: Why?\n"
    parsed = parse(raw, "Find a Wikipedia image that answers this question:")
    assert parsed.has_placeholder
    assert (parsed.instruction, parsed.text) == (
        "Find a Wikipedia image that answers this question:", "Why?")


def test_swap_image_token_changes_only_the_token():
    raw = "<|image_1|>\nRepresent the given image.\n"
    swapped = swap_image_token(raw, BACKBONE_IMAGE_TOKENS["qwen2_vl"])
    assert swapped == "<|image_pad|>\nRepresent the given image.\n"
