"""BLIP image-text retrieval through transformers' ``BlipForImageTextRetrieval``.

The vectors are those of BLIP's contrastive (ITC) head: the [CLS] states of the vision and
text encoders through ``vision_proj`` / ``text_proj``, before the head's L2 normalisation.
The matching (ITM) head scores pairs jointly and gives no vector per input, so it is unused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hf import HFTwoTowerEncoder, PreparedPixels, PreparedTokens

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage


class BLIPEncoder(HFTwoTowerEncoder):
    family = "blip"
    model_class = "BlipForImageTextRetrieval"

    def _encode_images(self, images: list[PILImage.Image] | PreparedPixels) -> torch.Tensor:
        hidden = self.model.vision_model(pixel_values=self._pixels(images))[0]
        return self.model.vision_proj(hidden[:, 0])  # type: ignore[no-any-return]

    def _encode_texts(self, texts: list[str] | PreparedTokens) -> torch.Tensor:
        hidden = self.model.text_encoder(**self._tokens(texts))[0]
        return self.model.text_proj(hidden[:, 0])  # type: ignore[no-any-return]

    def _model_config(self) -> dict[str, Any]:
        return {**super()._model_config(), "features": "itc projections of [CLS], unnormalised"}
