"""The Phi-3.5-V network: CLIP crops -> HD image embedding -> Phi-3 decoder.

transformers 5 has no Phi-3-V class, but its parts are native: the decoder is transformers'
``Phi3Model`` (same fused ``qkv_proj`` / ``gate_up_proj`` weights, LongRoPE = the original's
``su`` scaling) and the image tower is ``CLIPVisionModel``. What this module adds is the
original's image embedding and where its output goes in the token sequence.

This module imports torch at import time (it defines ``nn.Module`` classes); import it only
where a model is built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmeb.errors import ModelError

from .config import CROP_SIZE, PATCH_SIZE, TOKENS_PER_CROP, Phi3VConfig

# Image positions hold negative ids (-1 for <|image_1|>); the original also treats anything
# at or below -1e9 as not an image position.
_MIN_IMAGE_ID = -1_000_000_000
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def _merge_2x2(features: torch.Tensor) -> torch.Tensor:
    """[N, 24*24, C] patch features -> [N, 12, 12, 4C]: each 2x2 block concatenated in the
    order (0,0), (0,1), (1,0), (1,1), i.e. channel (2*dy + dx) * C + c."""
    n, tokens, c = features.shape
    side = int(tokens**0.5)
    half = side // 2
    return (
        features.reshape(n, half, 2, half, 2, c)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(n, half, half, 4 * c)
    )


class Phi3VImageEmbedding(nn.Module):
    """CLIP tower, 2x2 merge, ``sub_GN`` / ``glb_GN`` separators and the MLP projection.

    Parameter names follow the checkpoint's ``model.vision_embed_tokens.*``.
    """

    def __init__(self, config: Phi3VConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        options: dict[str, Any] = {"attn_implementation": attn_implementation}
        vision = CLIPVisionConfig(**config.vision, **options)
        self.img_processor = CLIPVisionModel(vision)
        width = 4 * config.image_dim_out
        hidden = config.hidden_size
        self.img_projection = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, width))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, width))
        self.layers_used = config.clip_layers_used
        self.order = config.hd_transform_order

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, 336, 336] crops -> [N, 576, C]: the hidden state the original takes
        (``hidden_states[layer_idx]``, before ``post_layernorm``) without the CLS token.

        Only the layers up to that hidden state run; the last layer's output is never used.
        """
        clip = self.img_processor
        weight = clip.embeddings.patch_embedding.weight
        hidden = clip.embeddings(pixel_values.to(weight.dtype))
        hidden = clip.pre_layrnorm(hidden)
        for layer in clip.encoder.layers[: self.layers_used]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]

    def _assemble(self, crops: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Merged features of one image's global view + rows*cols crops -> [tokens, 4C]."""
        merged = _merge_2x2(crops)  # [1 + rows*cols, 12, 12, 4C]
        grid, width = merged.shape[1], merged.shape[-1]
        glb = merged[:1]
        sub = (
            merged[1:]
            .reshape(rows, cols, grid, grid, width)
            .permute(0, 2, 1, 3, 4)
            .reshape(1, rows * grid, cols * grid, width)
        )
        # A separator closes every row of the crop grid and of the global view.
        sub = torch.cat([sub, self.sub_GN.expand(1, rows * grid, 1, width)], dim=2)
        glb = torch.cat([glb, self.sub_GN.expand(1, grid, 1, width)], dim=2)
        sub, glb = sub.reshape(-1, width), glb.reshape(-1, width)
        sep = self.glb_GN.reshape(1, width)
        parts = [sub, sep, glb] if self.order == "sub_glb" else [glb, sep, sub]
        return torch.cat(parts)

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """[n_img, slots, 3, 336, 336] and [n_img, 2] (HD height, width) -> the projected
        features of all images, concatenated in order: [sum of tokens, hidden]."""
        if pixel_values.dim() != 5 or image_sizes.shape != (pixel_values.shape[0], 2):
            raise ModelError(
                "pixel_values must be [images, crops, 3, 336, 336] with image_sizes [images, 2]; "
                f"got {tuple(pixel_values.shape)} and {tuple(image_sizes.shape)}"
            )
        grids = [(int(h) // CROP_SIZE, int(w) // CROP_SIZE) for h, w in image_sizes.tolist()]
        slots = pixel_values.shape[1]
        if any(r * c + 1 > slots for r, c in grids):
            raise ModelError(f"image_sizes {image_sizes.tolist()} need more than {slots} crops")
        # Zero-padded slots are independent of the output: run CLIP on the used ones only.
        used = torch.cat([pixel_values[i, : r * c + 1] for i, (r, c) in enumerate(grids)])
        features = self.patch_features(used)
        out, start = [], 0
        for rows, cols in grids:
            n = rows * cols + 1
            out.append(self._assemble(features[start : start + n], rows, cols))
            start += n
        tokens = torch.cat(out)
        dtype = next(self.img_projection.parameters()).dtype
        projected: torch.Tensor = self.img_projection(tokens.to(dtype))
        return projected


class Phi3VEmbeddingModel(nn.Module):
    """Phi-3.5-V without its LM head: tokens (+ images) -> final hidden states [B, L, H].

    ``language_model`` is transformers' ``Phi3Model`` (``model.embed_tokens|layers|norm`` in
    the checkpoint); ``image_embed`` is :class:`Phi3VImageEmbedding`
    (``model.vision_embed_tokens``). The token table lives in ``language_model`` only; the
    original's image embedding held a second reference to it (``wte``).
    """

    def __init__(self, config: Phi3VConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        import transformers
        from transformers import Phi3Config, Phi3Model

        if int(transformers.__version__.split(".")[0]) < 5:
            # rope_parameters and the flattened CLIPVisionModel are transformers 5's.
            raise ModelError(
                f"Phi-3.5-V needs transformers 5 or newer (installed: {transformers.__version__});"
                ' pip install -U "transformers>=5"'
            )
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ModelError(
                f"unknown attn_implementation {attn_implementation!r}; choose one of: "
                + ", ".join(ATTN_IMPLEMENTATIONS)
            )
        if config.vision["image_size"] != CROP_SIZE or config.vision["patch_size"] != PATCH_SIZE:
            raise ModelError("the CLIP tower must take 336-pixel crops with 14-pixel patches")
        self.config = config
        self.attn_implementation = attn_implementation
        options: dict[str, Any] = {"attn_implementation": attn_implementation, "use_cache": False}
        text = Phi3Config(**config.text, **options)
        self.language_model = Phi3Model(text)
        self.image_embed = Phi3VImageEmbedding(config, attn_implementation)
        self.tokens_per_crop = TOKENS_PER_CROP

    def rebuild_buffers(self, device: torch.device | str) -> None:
        """Recompute the non-persistent buffers (rotary frequencies, CLIP position ids).

        The loader builds the module on the meta device and assigns the checkpoint's tensors;
        buffers that no checkpoint stores must then be made again on the real device.
        """
        from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

        lm = self.language_model
        lm.rotary_emb = Phi3RotaryEmbedding(config=lm.config).to(device)
        embeddings = self.image_embed.img_processor.embeddings
        positions = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
        embeddings.register_buffer("position_ids", positions, persistent=False)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the image features written over the image positions, in
        row-major (batch, then time) order: the i-th image fills the i-th run of them."""
        table = self.language_model.embed_tokens
        input_ids = input_ids.to(table.weight.device)
        embeds = table(input_ids.clamp(min=0))
        image_mask = (input_ids < 0) & (input_ids > _MIN_IMAGE_ID)
        n_positions = int(image_mask.sum())
        if pixel_values is None or image_sizes is None:
            if n_positions:
                raise ModelError(
                    f"input_ids hold {n_positions} image positions but no pixel_values were given"
                )
            return embeds
        features = self.image_embed(pixel_values.to(embeds.device), image_sizes)
        if features.shape[0] != n_positions:
            raise ModelError(
                f"the images give {features.shape[0]} tokens but input_ids hold {n_positions} "
                "image positions; process text and image with the same num_crops"
            )
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states (after the last norm) [B, L, H].

        Positions count real tokens only, so a left-padded row gets the positions it has
        alone; with right padding (the original's) they equal the original's ``arange``.
        """
        embeds = self.embed(input_ids, pixel_values, image_sizes)
        mask = attention_mask.to(embeds.device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=False,
        )
        hidden: torch.Tensor = out.last_hidden_state
        return hidden
