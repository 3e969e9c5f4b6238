"""VLM2Vec on Qwen2-VL (``TIGER-Lab/VLM2Vec-Qwen2VL-2B`` / ``-7B``) with transformers' native
Qwen2-VL classes.

What VLM2Vec v1 did, reproduced here:

- The text is MMEB's string with ``<|image_1|>`` replaced by a bare ``<|image_pad|>`` (no
  ``<|vision_start|>``/``<|vision_end|>``, no chat template), which the processor repeats once
  per merged 2x2 patch group.
- Because there is no ``<|vision_start|>``, Qwen2-VL's rope index never saw an image: every
  token, image tokens included, got the 1-D position of its index in all three M-RoPE
  sections. transformers 5 would give image tokens 2-D positions (and other vectors), so the
  positions are passed explicitly.
- ``min_pixels``/``max_pixels`` passed in VLM2Vec's code never reached the image processor;
  the bounds of the checkpoint's ``preprocessor_config.json`` applied. They are the defaults
  here and can be overridden.
- The released checkpoints are LoRA (DoRA) adapters over Qwen2-VL-Instruct, merged at load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmeb.errors import ModelError
from mmeb.items import Item, Side

from .pixels import qwen2vl_image_processor
from .vlm import VLMEncoder, positions_from_mask, scatter_image_features

if TYPE_CHECKING:
    import torch

    from mmeb.tasks import TaskSpec


class Qwen2VLEncoder(VLMEncoder):
    """VLM2Vec's Qwen2-VL embedder; ``min_pixels``, ``max_pixels`` and ``processor`` (where the
    tokenizer and image processor come from; default: the model, i.e. the base of an adapter,
    as VLM2Vec's ``load_processor`` did) are options."""

    family = "vlm2vec-qwen2vl"
    image_token = "<|image_pad|>"
    # At 1344x1344, 96x96 patches merged 2x2: 2304 image tokens, plus the instruction.
    typical_tokens = 2400
    # transformers 4.x layout of Qwen2VLForConditionalGeneration -> transformers 5.
    adapter_key_renames = (
        (r"^model\.(?!language_model\.|visual\.)", "model.language_model."),
        (r"^visual\.", "model.visual."),
    )

    image_processor: Any

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        processor: str | None = None,
        **options: Any,
    ) -> None:
        for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ModelError(f"{name} must be a positive integer, got {value!r}")
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.processor_source = processor
        super().__init__(checkpoint, **options)

    def _load(self) -> None:
        import transformers as tf

        self.model = self._load_weights("Qwen2VLForConditionalGeneration")
        source = self.processor_source or self.layout.model
        self.tokenizer = tf.AutoTokenizer.from_pretrained(source)
        bounds: dict[str, Any] = {k: v for k, v in (("min_pixels", self.min_pixels),
                                    ("max_pixels", self.max_pixels)) if v is not None}
        # A PIL processor (no torchvision needed) computing the original's pixels.
        processor_class = qwen2vl_image_processor(self.pixel_pipeline)
        self.image_processor = processor_class.from_pretrained(source, **bounds)
        self.processor_source = source
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(self.image_token))
        if self.image_token_id != int(self.model.config.image_token_id):
            raise ModelError(
                f"the tokenizer of {source} maps {self.image_token} to {self.image_token_id}, "
                f"the model expects {self.model.config.image_token_id}; pass a matching "
                "--model-arg processor=ID_OR_DIR"
            )

    def _prepare(self, item: Item, *, side: Side, task: TaskSpec | None) -> dict[str, Any]:
        text = self._text(item, side=side, task=task)
        image = self._image(item)
        out: dict[str, Any] = {}
        if image is not None:
            if text.count(self.image_token) != 1:
                raise ModelError(
                    f"{item.origin or 'an item'} has an image but its text holds "
                    f"{text.count(self.image_token)} image tokens (expected one <|image_1|>)"
                )
            pixels = self.image_processor(images=[image], return_tensors="pt")
            grid = pixels["image_grid_thw"]
            merge = int(self.image_processor.merge_size)
            text = text.replace(self.image_token, self.image_token * (int(grid.prod()) // merge**2))
            out = {"pixel_values": pixels["pixel_values"], "image_grid_thw": grid}
        out["input_ids"] = self.tokenizer(text, return_tensors="pt")["input_ids"][0]
        return out

    def _collate(self, prepared: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self._pad_text(prepared)
        with_image = [p for p in prepared if "pixel_values" in p]
        batch["image_rows"] = torch.tensor(["pixel_values" in p for p in prepared])
        if with_image:
            batch["pixel_values"] = torch.cat([p["pixel_values"] for p in with_image])
            batch["image_grid_thw"] = torch.cat([p["image_grid_thw"] for p in with_image])
        return batch

    def _hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        batch = self._on_device(batch)
        core = self.model.model  # Qwen2VLModel: vision tower + language model, no LM head
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = core.get_input_embeddings()(ids)
        if "pixel_values" in batch:
            features = core.get_image_features(
                batch["pixel_values"], batch["image_grid_thw"], return_dict=True
            ).pooler_output
            embeds = scatter_image_features(
                embeds, ids, batch["image_rows"], _cat(features), self.image_token_id
            )
        # VLM2Vec's 1-D positions, the same in the temporal, height and width sections.
        positions = positions_from_mask(mask)[None].expand(3, -1, -1)
        out = core.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
        )
        return out.last_hidden_state  # type: ignore[no-any-return]

    def _model_config(self) -> dict[str, Any]:
        size = self.image_processor.size
        return {
            **super()._model_config(),
            "processor": self.processor_source,
            "image_processor": type(self.image_processor).__name__,
            "min_pixels": _size_field(size, "shortest_edge", "min_pixels"),
            "max_pixels": _size_field(size, "longest_edge", "max_pixels"),
            "positions": "1-D arange in all M-RoPE sections (VLM2Vec v1)",
        }


def _cat(features: Any) -> torch.Tensor:
    import torch

    return features if isinstance(features, torch.Tensor) else torch.cat(list(features))


def _size_field(size: Any, *names: str) -> int | None:
    for name in names:
        value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
        if value:
            return int(value)
    return None


class VLM2VecQwen2VL2B(Qwen2VLEncoder):
    family = "vlm2vec-qwen2vl-2b"
    default_base = "Qwen/Qwen2-VL-2B-Instruct"


class VLM2VecQwen2VL7B(Qwen2VLEncoder):
    family = "vlm2vec-qwen2vl-7b"
    default_base = "Qwen/Qwen2-VL-7B-Instruct"
