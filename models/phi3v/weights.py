"""Loading Phi-3.5-V weights as the checkpoints store them, and merging LoRA / DoRA adapters.

Full checkpoints (``TIGER-Lab/VLM2Vec-Full``, ``microsoft/Phi-3.5-vision-instruct``) are read
from their safetensors files (one file or a ``model.safetensors.index.json``) under the
original key names. Every tensor the module needs must be there and every tensor there must be
used, except the few listed in :data:`IGNORED_KEYS`; anything else is a one-line error naming
the keys. The module is built on the meta device and each tensor is assigned once, in the
target dtype and on the target device, so no random initialisation or second copy is made.

A PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, or the
``adapter_model.bin`` that ``TIGER-Lab/VLM2Vec-LoRA`` ships, read with
``torch.load(weights_only=True)`` and nothing else) is merged into the base tensors while they
are read, in float32: W' = W + s * B @ A with s = lora_alpha / r (alpha / sqrt(r) with rsLoRA),
and with DoRA W'' = m / ||W'||_row * W' (the norm over each output row), as PEFT's
``merge_and_unload`` does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb.errors import ModelError

from .config import load_config

if TYPE_CHECKING:
    import torch

    from .modeling import Phi3VEmbeddingModel

_LM, _IMAGE = "language_model.", "image_embed."
_CLIP = "image_embed.img_processor."
_CKPT_LM, _CKPT_IMAGE = "model.", "model.vision_embed_tokens."
_CKPT_CLIP = "model.vision_embed_tokens.img_processor.vision_model."
EMBED_KEY = "model.embed_tokens.weight"
# The same table under the image embedding's name (it shares the token embedding); a plain
# state_dict() of the original module would store it twice.
WTE_ALIAS = "model.vision_embed_tokens.wte.weight"
# Stored but not needed for embeddings: the LM head (98M parameters at full size) and buffers.
IGNORED_KEYS = ("lm_head.weight",)
_IGNORED_PATTERN = re.compile(r"(^|\.)(position_ids|rotary_emb\.inv_freq)$")
_ADAPTER_PREFIX = "base_model.model."
_SHOWN = 4


def checkpoint_key(module_key: str) -> str:
    """The checkpoint's name for a parameter of :class:`Phi3VEmbeddingModel`."""
    if module_key.startswith(_CLIP):
        # transformers 5's CLIPVisionModel has no ``vision_model.`` level; the checkpoint has.
        return _CKPT_CLIP + module_key[len(_CLIP) :]
    if module_key.startswith(_IMAGE):
        return _CKPT_IMAGE + module_key[len(_IMAGE) :]
    if module_key.startswith(_LM):
        return _CKPT_LM + module_key[len(_LM) :]
    raise ModelError(f"no checkpoint name for module parameter {module_key}")


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or bool(_IGNORED_PATTERN.search(key))


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOWN else shown


def checkpoint_files(checkpoint: str | Path) -> dict[str, Path]:
    """Key -> safetensors file of a checkpoint folder (sharded or single file)."""
    from safetensors import safe_open

    folder = Path(checkpoint)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{index} is not a safetensors index ({exc})") from None
        files = {key: folder / name for key, name in weight_map.items()}
        absent = sorted({str(p.name) for p in files.values() if not p.is_file()})
        if absent:
            raise ModelError(f"{index} names shards that are not in {folder}: {_listing(absent)}")
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        with safe_open(str(single), framework="pt") as handle:
            return {key: single for key in handle.keys()}  # noqa: SIM118 (not a dict)
    if any(folder.glob("pytorch_model*.bin")):
        raise ModelError(
            f"{folder} holds only pytorch_model*.bin weights; Phi-3.5-V loads safetensors "
            "(model.safetensors or model.safetensors.index.json)"
        )
    raise ModelError(
        f"{folder} has no model.safetensors or model.safetensors.index.json; pass a Phi-3.5-V "
        "checkpoint folder"
    )


def match_keys(
    module_keys: Iterable[str], stored: Iterable[str], source: str
) -> dict[str, str]:
    """module key -> stored key, or a one-line error naming what is missing or left over."""
    stored = set(stored)
    wanted = {key: checkpoint_key(key) for key in module_keys}
    if EMBED_KEY not in stored and WTE_ALIAS in stored:
        wanted = {k: (WTE_ALIAS if v == EMBED_KEY else v) for k, v in wanted.items()}
    used = set(wanted.values())
    missing = used - stored
    unexpected = {k for k in stored - used if not _ignored(k) and k != WTE_ALIAS}
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"lacks {_listing(missing)}")
        if unexpected:
            parts.append(f"has unexpected {_listing(unexpected)}")
        raise ModelError(
            f"checkpoint {source} does not match the Phi-3.5-V layout: {'; '.join(parts)}; "
            "pass a VLM2Vec-Full / Phi-3.5-vision-instruct checkpoint (and vision_config if "
            "its CLIP tower is not ViT-L/14-336)"
        )
    return wanted


@dataclass(frozen=True)
class LoraWeights:
    """One adapted linear layer: delta = scale * B @ A, DoRA magnitude m if any."""

    a: torch.Tensor
    b: torch.Tensor
    magnitude: torch.Tensor | None
    scale: float


def merge_lora(weight: torch.Tensor, lora: LoraWeights) -> torch.Tensor:
    """The merged weight, in float32."""
    import torch

    a, b = lora.a.to(weight.device, torch.float32), lora.b.to(weight.device, torch.float32)
    merged = weight.float() + lora.scale * (b @ a)
    if lora.magnitude is not None:
        norm = torch.linalg.norm(merged, dim=1)
        magnitude = lora.magnitude.to(weight.device, torch.float32)
        merged = (magnitude / norm).unsqueeze(1) * merged
    return merged


def is_adapter(folder: str | Path) -> bool:
    """Whether ``folder`` is a PEFT adapter folder rather than a full checkpoint."""
    return (Path(folder) / "adapter_config.json").is_file()


def adapter_base(folder: str | Path) -> str | None:
    """The base checkpoint an adapter names (``base_model_name_or_path``), if any."""
    config = _adapter_config(Path(folder))
    base = config.get("base_model_name_or_path")
    return str(base) if base else None


def _adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{folder} has no adapter_config.json; pass a PEFT LoRA adapter") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return config


def _read_adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    import torch

    safetensors_file = folder / "adapter_model.safetensors"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    bin_file = folder / "adapter_model.bin"
    if not bin_file.is_file():
        raise ModelError(f"{folder} has no adapter_model.safetensors or adapter_model.bin")
    try:
        payload = torch.load(str(bin_file), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler's refusal comes in several exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{bin_file} is not a plain tensor file; torch.load(weights_only=True) refused it "
            f"({first[:160]}); only tensors are read from an adapter"
        ) from None
    if not isinstance(payload, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()
    ):
        bad = (
            type(payload).__name__
            if not isinstance(payload, dict)
            else _listing(
                str(k) for k, v in payload.items() if not isinstance(v, torch.Tensor)
            )
        )
        raise ModelError(
            f"{bin_file} holds more than tensors ({bad}); an adapter file must map names to "
            "tensors"
        )
    return payload


_ADAPTER_SUFFIXES = {
    ".lora_A.weight": "a",
    ".lora_B.weight": "b",
    ".lora_magnitude_vector": "m",
    ".lora_magnitude_vector.weight": "m",
}


def read_adapter(folder: str | Path) -> dict[str, LoraWeights]:
    """A PEFT LoRA adapter as checkpoint weight key -> :class:`LoraWeights`."""
    folder = Path(folder)
    config = _adapter_config(folder)
    source = folder / "adapter_config.json"
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ModelError(f"{source}: peft_type {peft_type} is not supported (LORA only)")
    unsupported = {
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
        "modules_to_save": bool(config.get("modules_to_save")),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "lora_bias": bool(config.get("lora_bias")),
        "bias": config.get("bias", "none") not in ("none", None),
    }
    bad = [name for name, present in unsupported.items() if present]
    if bad:
        raise ModelError(f"{source}: {', '.join(bad)} is not supported; merge the adapter first")
    r = int(config.get("r", 8))
    alpha = float(config.get("lora_alpha", r))
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    use_dora = bool(config.get("use_dora"))

    parts: dict[str, dict[str, Any]] = {}
    unknown = []
    for key, tensor in _read_adapter_tensors(folder).items():
        name = key.removeprefix(_ADAPTER_PREFIX)
        for suffix, kind in _ADAPTER_SUFFIXES.items():
            if name.endswith(suffix):
                parts.setdefault(name[: -len(suffix)] + ".weight", {})[kind] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise ModelError(
            f"adapter {folder} has tensors that are not LoRA weights: {_listing(unknown)}"
        )
    if not parts:
        raise ModelError(f"adapter {folder} holds no LoRA weights")
    out = {}
    for weight_key, kinds in parts.items():
        if "a" not in kinds or "b" not in kinds or (use_dora != ("m" in kinds)):
            need = "lora_A, lora_B" + (" and lora_magnitude_vector" if use_dora else "")
            raise ModelError(
                f"adapter {folder}: {weight_key} must have {need} (use_dora={use_dora})"
            )
        a, b = kinds["a"], kinds["b"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != r or b.shape[1] != r:
            raise ModelError(
                f"adapter {folder}: {weight_key} has lora_A {tuple(a.shape)} and lora_B "
                f"{tuple(b.shape)}, not rank r={r} of adapter_config.json"
            )
        out[weight_key] = LoraWeights(a=a, b=b, magnitude=kinds.get("m"), scale=scale)
    return out


def torch_dtype(dtype: Any) -> torch.dtype:
    """A torch dtype from a torch dtype or any name the adapters accept (bf16, float32, ...)."""
    import torch

    from ..base import resolve_dtype

    if isinstance(dtype, torch.dtype):
        return dtype
    resolved: torch.dtype = getattr(torch, resolve_dtype(str(dtype).removeprefix("torch.")))
    return resolved


def _set_parameter(model: Any, name: str, tensor: torch.Tensor) -> None:
    import torch

    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)


def load_model(
    checkpoint: str | Path,
    *,
    vision_config: str | Path | None = None,
    adapter: str | Path | None = None,
    device: str = "cpu",
    dtype: Any = "float32",
    attn_implementation: str = "sdpa",
) -> Phi3VEmbeddingModel:
    """A Phi-3.5-V checkpoint folder (plus an optional LoRA adapter folder merged into it)
    as an eval-mode :class:`Phi3VEmbeddingModel` on ``device`` in ``dtype``."""
    import torch
    from safetensors import safe_open

    from .modeling import Phi3VEmbeddingModel

    folder = Path(checkpoint)
    config = load_config(folder, vision_config)
    target = torch_dtype(dtype)
    files = checkpoint_files(folder)
    try:
        with torch.device("meta"):
            model = Phi3VEmbeddingModel(config, attn_implementation)
    except (ImportError, ValueError) as exc:  # e.g. flash-attn asked for but not installed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"attn_implementation={attn_implementation} cannot be used here ({first[:160]}); "
            "use sdpa or eager"
        ) from None
    expected = dict(model.named_parameters())
    names = match_keys(expected, files, str(folder))
    lora = read_adapter(adapter) if adapter is not None else {}
    stored_names = set(names.values())
    untargeted = sorted(set(lora) - stored_names)
    if untargeted:
        raise ModelError(
            f"adapter {adapter} adapts weights that the Phi-3.5-V module does not load from "
            f"{folder}: {_listing(untargeted)}"
        )
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for module_key, stored_key in names.items():
        by_file.setdefault(files[stored_key], []).append((module_key, stored_key))
    for file, pairs in by_file.items():
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for module_key, stored_key in pairs:
                # Moved first, so that a merge runs on the target device.
                tensor = handle.get_tensor(stored_key).to(device)
                if stored_key in lora:
                    tensor = _merged(tensor, lora[stored_key], stored_key, adapter)
                shape = tuple(expected[module_key].shape)
                if tuple(tensor.shape) != shape:
                    raise ModelError(
                        f"checkpoint {folder}: {stored_key} has shape {tuple(tensor.shape)}, the "
                        f"module built from config.json expects {shape}; check config.json and "
                        "vision_config"
                    )
                _set_parameter(model, module_key, tensor.to(device=device, dtype=target))
    model.rebuild_buffers(device)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(f"Phi-3.5-V module kept unloaded tensors: {_listing(left)}")
    return model.eval()


def _merged(
    weight: torch.Tensor, lora: LoraWeights, key: str, adapter: str | Path | None
) -> torch.Tensor:
    out_features, in_features = (weight.shape[0], weight.shape[1]) if weight.dim() == 2 else (0, 0)
    if (
        weight.dim() != 2
        or tuple(lora.a.shape) != (lora.a.shape[0], in_features)
        or lora.b.shape[0] != out_features
        or (lora.magnitude is not None and tuple(lora.magnitude.shape) != (out_features,))
    ):
        raise ModelError(
            f"adapter {adapter}: the LoRA weights for {key} do not fit its shape "
            f"{tuple(weight.shape)}; was the adapter trained on this base model?"
        )
    return merge_lora(weight, lora)
