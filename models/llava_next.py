"""VLM2Vec on LLaVA-NeXT (``TIGER-Lab/VLM2Vec-LLaVa-Next``) with transformers' native classes.

What VLM2Vec v1 did, reproduced here: the text is MMEB's string with ``<|image_1|>`` replaced by
``<image>`` (no ``[INST]`` template); the processor expands ``<image>`` to the anyres feature
count; the vector is the last token's final hidden state, L2-normalised. VLM2Vec loaded the
processor of ``llava-hf/llava-v1.6-mistral-7b-hf`` whatever the model; here it comes from the
checkpoint when the checkpoint has one (the released model ships the same files), else from that
repo, and ``--model-arg processor=ID_OR_DIR`` overrides both.

VLM2Vec's mixed batches gave text-only rows dummy image features that landed in the image rows
(batched vectors differed from single-item ones by up to 0.2). Only real images are encoded
here, each into its own row, so any batch gives the vectors of one item at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb.items import Item, Side

from .pixels import llava_next_image_processor
from .vlm import VLMEncoder, checkpoint_file, positions_from_mask, scatter_image_features

if TYPE_CHECKING:
    import torch

    from mmeb.tasks import TaskSpec

FALLBACK_PROCESSOR = "llava-hf/llava-v1.6-mistral-7b-hf"
# transformers 4.x layout of LlavaNextForConditionalGeneration -> transformers 5.
LLAVA_NEXT_RENAMES = (
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^vision_tower\.", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
    (r"^image_newline", "model.image_newline"),
)


class LlavaNextEncoder(VLMEncoder):
    """A LLaVA-NeXT embedder pooled at the last token; ``processor`` picks where the tokenizer
    and image processor come from."""

    family = "vlm2vec-llava-next"
    image_token = "<image>"
    default_padding_side = "left"
    # 1344x1344 -> the 672x672 grid: 2928 image tokens, plus the text.
    typical_tokens = 3000
    adapter_key_renames = LLAVA_NEXT_RENAMES

    processor: Any

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        processor: str | None = None,
        **options: Any,
    ) -> None:
        self.processor_source = processor
        super().__init__(checkpoint, **options)

    def _default_processor(self) -> str:
        has_own = checkpoint_file(self.checkpoint, "preprocessor_config.json") is not None
        return self.checkpoint if has_own else FALLBACK_PROCESSOR

    def _processor_settings(self, source: str) -> dict[str, Any]:
        """The processor's token-count settings: ``processor_config.json`` where the source has
        one, else what the model config implies. With "default" the processor drops one token
        per tile for the CLS position, so ``num_additional_image_tokens`` must be 1."""
        config = self.model.config
        settings: dict[str, Any] = {
            "patch_size": int(config.vision_config.patch_size),
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            "num_additional_image_tokens": 1,
            "image_token": self.image_token,
        }
        path = checkpoint_file(source, "processor_config.json")
        if path is not None:
            saved = json.loads(Path(path).read_text())
            settings.update({k: saved[k] for k in settings if saved.get(k) is not None})
        return settings

    def _load(self) -> None:
        import transformers as tf

        self.model = self._load_weights("LlavaNextForConditionalGeneration")
        source = self.processor_source or self._default_processor()
        self.tokenizer = tf.AutoTokenizer.from_pretrained(source)
        image_class = llava_next_image_processor(self.pixel_pipeline)
        self.processor = tf.LlavaNextProcessor(
            image_processor=image_class.from_pretrained(source),
            tokenizer=self.tokenizer,
            **self._processor_settings(source),
        )
        self.processor_source = source
        self.image_token_id = int(self.model.config.image_token_id)

    def _prepare(self, item: Item, *, side: Side, task: TaskSpec | None) -> dict[str, Any]:
        text = self._text(item, side=side, task=task)
        image = self._image(item)
        if image is None:
            ids = self.tokenizer(text, return_tensors="pt")["input_ids"][0]
            return {"input_ids": ids}
        out = self.processor(text=[text], images=[image], return_tensors="pt")
        return {
            "input_ids": out["input_ids"][0],
            "pixel_values": out["pixel_values"][0],  # (tiles, 3, H, W)
            "image_sizes": out["image_sizes"],  # (1, 2)
        }

    def _collate(self, prepared: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self._pad_text(prepared)
        batch["image_rows"] = torch.tensor(["pixel_values" in p for p in prepared])
        with_image = [p for p in prepared if "pixel_values" in p]
        if with_image:
            # Images have different tile counts; the model reads each one's count from its size.
            tiles = max(int(p["pixel_values"].shape[0]) for p in with_image)
            pixels = torch.zeros((len(with_image), tiles, *with_image[0]["pixel_values"].shape[1:]),
                                 dtype=with_image[0]["pixel_values"].dtype)
            for row, p in enumerate(with_image):
                pixels[row, : p["pixel_values"].shape[0]] = p["pixel_values"]
            batch["pixel_values"] = pixels
            batch["image_sizes"] = torch.cat([p["image_sizes"] for p in with_image])
        return batch

    def _hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        import torch

        batch = self._on_device(batch)
        core = self.model.model  # LlavaNextModel: vision tower, projector, language model
        config = self.model.config
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = core.get_input_embeddings()(ids)
        if "pixel_values" in batch:
            features = core.get_image_features(
                batch["pixel_values"],
                batch["image_sizes"],
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
                return_dict=True,
            ).pooler_output
            embeds = scatter_image_features(
                embeds, ids, batch["image_rows"], torch.cat(list(features)), self.image_token_id
            )
        out = core.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions_from_mask(mask),
            use_cache=False,
        )
        return out.last_hidden_state  # type: ignore[no-any-return]

    def _model_config(self) -> dict[str, Any]:
        return {
            **super()._model_config(),
            "processor": self.processor_source,
            "image_processor": type(self.processor.image_processor).__name__,
            "vision_feature_select_strategy": self.processor.vision_feature_select_strategy,
        }
