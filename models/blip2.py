"""BLIP-2 through transformers' ``Blip2ForImageTextRetrieval`` (the Q-Former, no language model).

The Q-Former turns an image into ``num_query_tokens`` query vectors (32 in the released
checkpoints) and a text into one [CLS] vector. BLIP-2's own image-text score takes the best of
the query vectors, which no single-vector encoder can express, so the adapter keeps one query
token: the first by default, as the VLM2Vec paper's evaluation code did
(``image_embeds[0, 0, :]``).

``features`` picks the space:

- ``projection`` (default): query/[CLS] states through the contrastive projections
  (``vision_projection`` / ``text_projection``), the space where BLIP-2 compares images and
  texts, before its L2 normalisation.
- ``qformer``: the Q-Former's hidden states without projection, which is what LAVIS's
  ``extract_features(...).image_embeds`` / ``.text_embeds`` return and what the paper's code
  took for its BLIP2 row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmeb.errors import ModelError

from .hf import HFTwoTowerEncoder, PreparedPixels, PreparedTokens

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

FEATURES = ("projection", "qformer")


class BLIP2Encoder(HFTwoTowerEncoder):
    family = "blip2"
    model_class = "Blip2ForImageTextRetrieval"

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        features: str = "projection",
        query_token: int = 0,
        **options: Any,
    ) -> None:
        if features not in FEATURES:
            raise ModelError(f"unknown features {features!r}; choose one of: {', '.join(FEATURES)}")
        if isinstance(query_token, bool) or not isinstance(query_token, int) or query_token < 0:
            raise ModelError(f"query_token must be a non-negative integer, got {query_token!r}")
        self.features = features
        self.query_token = query_token
        super().__init__(checkpoint, **options)

    def _load(self) -> None:
        super()._load()
        queries = self.model.config.num_query_tokens
        if self.query_token >= queries:
            raise ModelError(
                f"query_token={self.query_token} but {self.checkpoint} has {queries} query tokens"
            )

    def _max_positions(self) -> int | None:
        return getattr(self.model.config.qformer_config, "max_position_embeddings", None)

    def _encode_images(self, images: list[PILImage.Image] | PreparedPixels) -> torch.Tensor:
        import torch

        model = self.model
        patches = model.vision_model(pixel_values=self._pixels(images))[0]
        patch_mask = torch.ones(patches.shape[:-1], dtype=torch.long, device=patches.device)
        queries = model.query_tokens.expand(patches.shape[0], -1, -1)
        hidden = model.qformer(
            query_embeds=queries, encoder_hidden_states=patches, encoder_attention_mask=patch_mask
        )[0][:, self.query_token]
        if self.features == "qformer":
            return hidden  # type: ignore[no-any-return]
        projection = model.vision_projection
        return projection(hidden.to(projection.weight.dtype))  # type: ignore[no-any-return]

    def _encode_texts(self, texts: list[str] | PreparedTokens) -> torch.Tensor:
        model = self.model
        tokens = self._tokens(texts)
        # Text only: no query tokens in front (query_length=0), as in BLIP-2's contrastive path.
        hidden = model.qformer(
            query_embeds=model.embeddings(input_ids=tokens["input_ids"]),
            query_length=0,
            attention_mask=tokens["attention_mask"],
        )[0][:, 0]
        if self.features == "qformer":
            return hidden  # type: ignore[no-any-return]
        projection = model.text_projection
        return projection(hidden.to(projection.weight.dtype))  # type: ignore[no-any-return]

    def _model_config(self) -> dict[str, Any]:
        return {
            **super()._model_config(),
            "features": self.features,
            "image_vector": (
                f"query token {self.query_token} of {self.model.config.num_query_tokens}"
            ),
            "text_vector": "[CLS]",
        }
