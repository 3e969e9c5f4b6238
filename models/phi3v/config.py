"""Phi-3.5-V configuration: the checkpoint's ``config.json`` and the CLIP tower's config.

A Phi-3.5-V ``config.json`` (``model_type: phi3_v``) describes the Phi-3 language model and,
under ``embd_layer`` / ``img_processor``, how images enter it. It does not describe the CLIP
image tower: the original code builds ViT-L/14-336 from a constant, whatever the checkpoint
says. :data:`CLIP_VIT_L14_336` is that constant; a ``vision_config`` JSON file replaces it
(small test towers). Pure Python: nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmeb.errors import ModelError

# The image tower of microsoft/Phi-3.5-vision-instruct (openai/clip-vit-large-patch14-336).
CLIP_VIT_L14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}

# The HD transform cuts images into 336-pixel crops and the embedding merges the 24x24 patch
# grid into 12x12: both are fixed by the processor, so a tower must keep them.
CROP_SIZE = 336
PATCH_SIZE = 14
TOKENS_PER_CROP = 144

# config.json fields copied into transformers' Phi3Config as they are.
_TEXT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "rms_norm_eps",
    "sliding_window",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "attention_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "initializer_range",
)
_REQUIRED_TEXT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)
# CLIPVisionConfig fields a vision_config file may set (anything else in it is ignored).
_VISION_FIELDS = tuple(CLIP_VIT_L14_336)


@dataclass(frozen=True)
class Phi3VConfig:
    """What the module needs to know, read and checked once.

    ``text`` holds keyword arguments for ``transformers.Phi3Config`` (with ``rope_parameters``
    already in transformers 5's form), ``vision`` those for ``CLIPVisionConfig``.
    """

    text: dict[str, Any]
    vision: dict[str, Any]
    image_dim_out: int
    layer_idx: int = -2
    hd_transform_order: str = "sub_glb"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.text["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.text["vocab_size"])

    @property
    def pad_token_id(self) -> int | None:
        value = self.text.get("pad_token_id")
        return None if value is None else int(value)

    @property
    def clip_layers_used(self) -> int:
        """How many CLIP encoder layers produce the features the embedding takes.

        The original takes ``hidden_states[layer_idx]`` of a run with all hidden states, where
        index 0 is the input of the first layer; only that many layers need to run.
        """
        n = int(self.vision["num_hidden_layers"])
        return self.layer_idx % (n + 1)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{what} {path} does not exist; pass a Phi-3.5-V checkpoint folder"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{what} {path} cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{what} {path} must hold a JSON object")
    return data


def rope_parameters(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """config.json's rope fields in transformers 5's ``rope_parameters`` form.

    Phi-3.5-V's ``rope_scaling`` type ``su`` is transformers' ``longrope``: short factors up to
    ``original_max_position_embeddings`` tokens, long factors beyond, and cos/sin scaled by
    sqrt(1 + ln(max/original) / ln(original)). ``original_max_position_embeddings``, the factor
    and the attention factor are written out so that neither the long/short switch nor the
    scaling depends on how a transformers version fills them in.
    """
    theta = float(raw.get("rope_theta", 10000.0))
    scaling = raw.get("rope_scaling")
    if scaling is None:
        return {"rope_type": "default", "rope_theta": theta}
    if not isinstance(scaling, dict):
        raise ModelError(f"{source}: rope_scaling must be an object or null, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in ("su", "longrope"):
        raise ModelError(
            f"{source}: rope_scaling type {kind!r} is not supported; Phi-3.5-V uses 'su' (longrope)"
        )
    head_dim = int(raw["hidden_size"]) // int(raw["num_attention_heads"])
    params: dict[str, Any] = {"rope_type": "longrope", "rope_theta": theta}
    for name in ("short_factor", "long_factor"):
        factors = scaling.get(name)
        if not isinstance(factors, list) or len(factors) != head_dim // 2:
            raise ModelError(
                f"{source}: rope_scaling.{name} must list {head_dim // 2} numbers (head_dim / 2)"
            )
        params[name] = [float(x) for x in factors]
    original = raw.get("original_max_position_embeddings")
    if original is None:
        raise ModelError(f"{source}: rope_scaling 'su' needs original_max_position_embeddings")
    params["original_max_position_embeddings"] = int(original)
    # The original's attention factor, set here rather than left to a library default.
    factor = int(raw.get("max_position_embeddings", original)) / int(original)
    params["factor"] = factor
    params["attention_factor"] = (
        math.sqrt(1 + math.log(factor) / math.log(int(original))) if factor > 1 else 1.0
    )
    return params


def read_vision_config(path: str | Path | None) -> dict[str, Any]:
    """The CLIP tower's config: ViT-L/14-336, or the fields of a JSON file."""
    if path is None:
        return dict(CLIP_VIT_L14_336)
    file = Path(path)
    data = _read_json(file, "vision_config")
    model_type = data.get("model_type", "clip_vision_model")
    if model_type != "clip_vision_model":
        raise ModelError(
            f"vision_config {file} has model_type {model_type!r}; it must describe a "
            "clip_vision_model (a CLIPVisionConfig)"
        )
    vision = dict(CLIP_VIT_L14_336)
    vision.update({k: data[k] for k in _VISION_FIELDS if k in data})
    if vision["image_size"] != CROP_SIZE or vision["patch_size"] != PATCH_SIZE:
        raise ModelError(
            f"vision_config {file} has image_size {vision['image_size']} and patch_size "
            f"{vision['patch_size']}; Phi-3.5-V's crops need image_size {CROP_SIZE} and "
            f"patch_size {PATCH_SIZE}"
        )
    return vision


def _check_image_fields(raw: dict[str, Any], source: str) -> tuple[str, int, int]:
    embd = raw.get("embd_layer") or {}
    img = raw.get("img_processor") or {}
    if not isinstance(embd, dict) or not isinstance(img, dict):
        raise ModelError(f"{source}: embd_layer and img_processor must be objects")
    expected = {
        "embedding_cls": "image",
        "projection_cls": "mlp",
        "use_hd_transform": True,
        "with_learnable_separator": True,
    }
    for key, value in expected.items():
        if embd.get(key, value) != value:
            raise ModelError(
                f"{source}: embd_layer.{key} = {embd.get(key)!r} is not supported "
                f"(Phi-3.5-V has {value!r})"
            )
    order = embd.get("hd_transform_order", "glb_sub")
    if order not in ("sub_glb", "glb_sub"):
        raise ModelError(f"{source}: embd_layer.hd_transform_order must be sub_glb or glb_sub")
    if img.get("name", "clip_vision_model") != "clip_vision_model":
        raise ModelError(f"{source}: img_processor.name must be clip_vision_model")
    if img.get("type_feature", "patch") != "patch":
        raise ModelError(
            f"{source}: img_processor.type_feature {img.get('type_feature')!r} is not supported "
            "(Phi-3.5-V uses 'patch')"
        )
    tokens = int(img.get("num_img_tokens", TOKENS_PER_CROP))
    if tokens != TOKENS_PER_CROP:
        raise ModelError(
            f"{source}: img_processor.num_img_tokens is {tokens}; the HD transform gives "
            f"{TOKENS_PER_CROP} per crop"
        )
    layer_idx = int(img.get("layer_idx", -2))
    return order, layer_idx, int(img.get("image_dim_out", 1024))


def parse_config(
    raw: dict[str, Any], vision: dict[str, Any], source: str = "config.json"
) -> Phi3VConfig:
    """Check a Phi-3-V config dict and split it into the language and image parts."""
    missing = [k for k in _REQUIRED_TEXT_FIELDS if k not in raw]
    if missing:
        raise ModelError(f"{source} lacks {', '.join(missing)}; is it a Phi-3.5-V config.json?")
    order, layer_idx, image_dim_out = _check_image_fields(raw, source)
    if image_dim_out != int(vision["hidden_size"]):
        raise ModelError(
            f"{source}: img_processor.image_dim_out is {image_dim_out} but the CLIP tower is "
            f"{vision['hidden_size']} wide; pass the vision_config that matches the checkpoint"
        )
    n_layers = int(vision["num_hidden_layers"])
    if not -(n_layers + 1) <= layer_idx <= n_layers:
        raise ModelError(f"{source}: img_processor.layer_idx {layer_idx} is outside the tower")
    text = {k: raw[k] for k in _TEXT_FIELDS if k in raw}
    text.setdefault("num_key_value_heads", text["num_attention_heads"])
    text["rope_parameters"] = rope_parameters(raw, source)
    # Phi-3.5-V's window (262144) is longer than any input, i.e. plain causal attention.
    if text.get("sliding_window") is not None and text["sliding_window"] >= text.get(
        "max_position_embeddings", 0
    ):
        text["sliding_window"] = None
    text["tie_word_embeddings"] = False
    recorded = ("_name_or_path", "torch_dtype", "transformers_version")
    extra: dict[str, Any] = {k: raw[k] for k in recorded if k in raw}
    return Phi3VConfig(
        text=text,
        vision=vision,
        image_dim_out=image_dim_out,
        layer_idx=layer_idx,
        hd_transform_order=order,
        source=source,
        extra=extra,
    )


def load_config(checkpoint: str | Path, vision_config: str | Path | None = None) -> Phi3VConfig:
    """``checkpoint``/config.json plus the CLIP tower (ViT-L/14-336 or ``vision_config``)."""
    path = Path(checkpoint) / "config.json"
    raw = _read_json(path, "config file")
    model_type = raw.get("model_type")
    if model_type != "phi3_v":
        raise ModelError(
            f"{path} has model_type {model_type!r}; pass a Phi-3.5-V checkpoint (model_type phi3_v)"
        )
    return parse_config(raw, read_vision_config(vision_config), source=str(path))
