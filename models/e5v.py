"""E5-V (``royokong/e5-v``): LLaVA-NeXT on Llama-3-8B, prompted to summarise in one word.

E5-V embeds an input by asking the model to summarise it in one word and taking the last
token's final hidden state. The prompt depends on what the input holds (text, image, or both)
and sits inside the Llama-3 chat template, without a system turn; the tokenizer adds
``<|begin_of_text|>``:

- text: ``{text}\\nSummary above sentence in one word: `` (E5-V's README)
- image: ``<image>\\nSummary above image in one word: `` (E5-V's README)
- image+text: ``<image>\\n{text}\\nSummary above image and text in one word: `` (VLM2Vec's E5-V
  baseline)

``{text}`` is the item's text without MMEB's instruction (``instruction=none``, the default:
E5-V was not trained with instructions) or with it in front (``instruction=prepend``). The
checkpoint ships no ``processor_config.json``; its processor gets patch size 14, the "default"
feature strategy and one additional (CLS) token, without which transformers 5 cannot expand
``<image>``. The tokenizer pads with its end-of-sequence token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmeb.items import Item, Side

from .llava_next import LlavaNextEncoder
from .two_tower import InstructionPolicy, model_text, parse_instruction_policy

if TYPE_CHECKING:
    from mmeb.tasks import TaskSpec

LLAMA3_TEMPLATE = (
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n \n"
)
TEXT_PROMPT = "{text}\nSummary above sentence in one word: "
IMAGE_PROMPT = "<image>\nSummary above image in one word: "
IMAGE_TEXT_PROMPT = "<image>\n{text}\nSummary above image and text in one word: "


def e5v_prompt(text: str, *, has_image: bool) -> str:
    """The full E5-V input for an item's text and whether it has an image."""
    if not has_image:
        inner = TEXT_PROMPT.format(text=text)
    elif text:
        inner = IMAGE_TEXT_PROMPT.format(text=text)
    else:
        inner = IMAGE_PROMPT
    return LLAMA3_TEMPLATE.format(inner)


class E5VEncoder(LlavaNextEncoder):
    """E5-V's prompted last-token embedding; ``instruction`` is ``none`` or ``prepend``."""

    family = "e5-v"
    # E5-V feeds images as they are; VLM2Vec's 1344x1344 squash belongs to its own models.
    default_resolution = "native"
    typical_tokens = 2400

    def __init__(
        self, checkpoint: str | None = None, *, instruction: str | None = None, **options: Any
    ) -> None:
        self.instruction: InstructionPolicy = parse_instruction_policy(instruction)
        super().__init__(checkpoint, **options)

    def _default_processor(self) -> str:
        return self.checkpoint

    def _text(self, item: Item, *, side: Side, task: TaskSpec | None) -> str:  # noqa: ARG002
        return e5v_prompt(model_text(item, self.instruction), has_image=item.has_image)

    def _policy_config(self) -> dict[str, Any]:
        return {**super()._policy_config(), "instruction": self.instruction.value,
                "prompt": "E5-V one-word summary in the Llama-3 chat template"}
