"""The model side of training: the ``EmbeddingModel`` contract, adapters, and a toy model.

The trainer knows a model only through :class:`EmbeddingModel`: ``collate`` turns pairs' sides
into a batch (CPU tensors), ``encode`` maps a batch to one embedding per row (``forward``
encodes several sides in one call, the unit DDP wraps), ``save`` writes a folder that the
model's loader reads back. A VLM backbone is one more subclass, registered in :data:`MODELS`.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import sys
import zlib
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmeb.errors import DataError, ModelError
from mmeb.instructions import IMAGE_PLACEHOLDER
from vlm2vec.data import Input

if TYPE_CHECKING:
    from vlm2vec.config import TrainConfig


class EmbeddingModel(nn.Module):
    """What the trainer trains. Query and target sides share the weights (as in VLM2Vec)."""

    #: Module names that receive LoRA adapters when the config names none.
    default_lora_targets: tuple[str, ...] = ()

    @abstractmethod
    def collate(self, items: Sequence[Input], side: str) -> dict[str, Any]:
        """A batch for ``encode`` from one side ("query", "target" or "negative") of pairs."""

    def collator(self) -> Callable[[Sequence[Input], str], dict[str, Any]]:
        """``collate`` for worker processes (``data_workers``). This default is the bound
        method, so a spawned worker receives the whole module; a model whose collation needs
        no weights returns a callable without them."""
        return self.collate

    @abstractmethod
    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        """[B, D] embeddings (not normalised; the loss normalises)."""

    @abstractmethod
    def save(self, out_dir: Path) -> None:
        """Write the trained model into ``out_dir`` (a folder its loader reads)."""

    def forward(self, sides: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Encode several sides in one call: one forward per backward, as DDP expects."""
        return {side: self.encode(batch) for side, batch in sides.items()}

    # The interface; this default refuses, so it uses none of the arguments.
    def apply_adapters(
        self, r: int, alpha: int, dropout: float,  # noqa: ARG002
        target_modules: Sequence[str], use_dora: bool,  # noqa: ARG002
    ) -> None:
        """Freeze the weights and add LoRA/DoRA adapters (default: to the whole module)."""
        raise ModelError(f"{type(self).__name__} does not support finetune: lora")

    def enable_gradient_checkpointing(self) -> None:
        raise ModelError(f"{type(self).__name__} does not support gradient_checkpointing")


def apply_lora(module: nn.Module, r: int, alpha: int, dropout: float,
               target_modules: str | Sequence[str], use_dora: bool = False) -> nn.Module:
    """``module`` wrapped by peft with LoRA (or DoRA) on ``target_modules`` (module names, or
    one string: a regular expression on full module paths); only the adapters train. Gaussian
    A initialisation (B starts at zero), as the original code."""
    from peft import LoraConfig, get_peft_model

    if not target_modules:
        raise ModelError("lora_target_modules is empty and the model names no default")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=targets, use_dora=use_dora,
                        init_lora_weights="gaussian")
    try:
        return get_peft_model(module, config)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ModelError(f"lora_target_modules {targets}: {exc}".splitlines()[0]) \
            from None


def merged_module(module: nn.Module) -> nn.Module:
    """A copy with adapters folded into the weights (the module itself without adapters)."""
    import copy

    if _is_peft(module):
        return copy.deepcopy(module).merge_and_unload()  # type: ignore[operator,no-any-return]
    return module


def _is_peft(module: nn.Module) -> bool:
    # peft is imported only by apply_lora; if it is not loaded, nothing here is a PeftModel
    # (and the seconds its import takes are saved for full fine-tuning).
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(module, peft.PeftModel)


# -- the toy model ------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def hashed_tokens(text: str, vocab: int) -> list[int]:
    """Word unigrams and bigrams hashed into ``vocab`` buckets (stable across processes)."""
    words = _WORD.findall(text.replace(IMAGE_PLACEHOLDER, " ").lower())
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    return [zlib.crc32(g.encode()) % vocab for g in grams]


def load_image(item: Input, size: int) -> torch.Tensor:
    """[3, size, size] float tensor in [0, 1]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    assert item.image is not None
    if item.pixels is not None:  # an augmented copy stands in for the file
        rgb = item.pixels.convert("RGB")
    else:
        try:
            with Image.open(item.image) as img:
                rgb = img.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"{item.origin}: image not found: {item.image}") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(f"{item.origin}: cannot read image {item.image} ({exc})") from None
    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)


def toy_collate(items: Sequence[Input], side: str, *, vocab: int,  # noqa: ARG001
                size: int) -> dict[str, Any]:
    """The toy model's batch: hashed token ids with offsets, and the pictures of the rows that
    have one (the side does not change it)."""
    ids: list[int] = []
    offsets: list[int] = []
    pictures: list[torch.Tensor] = []
    rows: list[int] = []
    for row, item in enumerate(items):
        offsets.append(len(ids))
        ids.extend(hashed_tokens(item.text, vocab))
        if item.image is not None:
            pictures.append(load_image(item, size))
            rows.append(row)
    images = torch.stack(pictures) if pictures else torch.zeros(0, 3, size, size)
    return {"token_ids": torch.tensor(ids, dtype=torch.long),
            "offsets": torch.tensor(offsets, dtype=torch.long),
            "images": images, "image_rows": torch.tensor(rows, dtype=torch.long)}


class ToyNet(nn.Module):
    """Bag of hashed tokens + a two-layer conv net, each normalised, fused by a small MLP."""

    def __init__(self, dim: int, vocab: int, channels: int) -> None:
        super().__init__()
        self.tokens = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.text_proj = nn.Linear(dim, dim)
        self.text_norm = nn.LayerNorm(dim)
        self.conv = nn.Sequential(
            nn.Conv2d(3, channels // 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())  # small objects anywhere in the picture
        self.image_proj = nn.Linear(channels, dim)
        self.image_norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.checkpointing = False

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        text = self.text_norm(self.text_proj(self.tokens(batch["token_ids"], batch["offsets"])))
        images = batch["images"]
        if images.shape[0]:
            # Per-image standardisation: the sample pictures are small shapes on a plain
            # background, whose raw pixels barely differ from picture to picture.
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            std = images.std(dim=(1, 2, 3), keepdim=True)
            images = (images - mean) / (std + 1e-3)
            if self.checkpointing and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                feats = checkpoint(self.conv, images, use_reentrant=False)
            else:
                feats = self.conv(images)
            pictures = self.image_norm(self.image_proj(feats))
            text = text.index_add(0, batch["image_rows"], pictures.to(text.dtype))
        hidden = nn.functional.gelu(self.mix(text))
        return self.out_proj(hidden) + text  # type: ignore[no-any-return]


class ToyEmbedder(EmbeddingModel):
    """A tiny pure-torch embedding model for tests and demos (no download, CPU-fast)."""

    CONFIG_FILE = "toy_config.json"
    WEIGHTS_FILE = "model.safetensors"
    default_lora_targets = ("text_proj", "image_proj", "mix", "out_proj")

    def __init__(self, dim: int = 64, vocab: int = 4096, image_size: int = 48,
                 channels: int = 16) -> None:
        super().__init__()
        self.options = {"dim": dim, "vocab": vocab, "image_size": image_size,
                        "channels": channels}
        self.net: nn.Module = ToyNet(dim, vocab, channels)

    def collate(self, items: Sequence[Input], side: str) -> dict[str, Any]:
        return self.collator()(items, side)

    def collator(self) -> Callable[[Sequence[Input], str], dict[str, Any]]:
        return functools.partial(toy_collate, vocab=self.options["vocab"],
                                 size=self.options["image_size"])

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.net(batch)  # type: ignore[no-any-return]

    def apply_adapters(self, r: int, alpha: int, dropout: float,
                       target_modules: Sequence[str], use_dora: bool) -> None:
        self.net = apply_lora(self.net, r, alpha, dropout,
                              target_modules or self.default_lora_targets, use_dora)

    def enable_gradient_checkpointing(self) -> None:
        inner = unwrapped(self.net)
        inner.checkpointing = True

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous()
                 for k, v in merged_module(self.net).state_dict().items()}
        save_file(state, str(out_dir / self.WEIGHTS_FILE))
        (out_dir / self.CONFIG_FILE).write_text(json.dumps(self.options, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ToyEmbedder:
        from safetensors.torch import load_file

        config, weights = folder / cls.CONFIG_FILE, folder / cls.WEIGHTS_FILE
        if not config.is_file() or not weights.is_file():
            raise ModelError(f"{folder}: not a toy model folder (needs {cls.CONFIG_FILE} and "
                             f"{cls.WEIGHTS_FILE}, as `vlm2vec train` writes)")
        model = cls(**json.loads(config.read_text()))
        model.net.load_state_dict(load_file(str(weights)))
        return model


def unwrapped(module: nn.Module) -> Any:
    """The user module inside a peft wrapper (or the module itself)."""
    if _is_peft(module):
        return module.get_base_model()  # type: ignore[operator]
    return module


# -- registry -------------------------------------------------------------------------------


def _build_toy(config: TrainConfig) -> EmbeddingModel:
    if config.checkpoint:
        if config.model_args:
            raise ModelError("model_args and checkpoint both given; the toy folder fixes its "
                             "options")
        return ToyEmbedder.load(Path(config.checkpoint))
    try:
        return ToyEmbedder(**config.model_args)
    except TypeError as exc:
        raise ModelError(f"model_args for toy: {exc}; valid: dim, vocab, image_size, "
                         "channels") from None


#: The VLM backbones of ``mmeb.models`` (see vlm2vec.vlm_model), by training name.
VLM_BACKBONES = ("qwen2vl", "qwen2vl-2b", "qwen2vl-7b", "llava-next")


def _vlm_builder(backbone: str) -> Callable[[TrainConfig], EmbeddingModel]:
    def build(config: TrainConfig) -> EmbeddingModel:
        from vlm2vec.vlm_model import build_vlm  # transformers loads only for a VLM

        return build_vlm(backbone)(config)

    return build


#: model name -> builder.
MODELS: dict[str, Callable[[TrainConfig], EmbeddingModel]] = {
    "toy": _build_toy, **{name: _vlm_builder(name) for name in VLM_BACKBONES}}


def build_model(config: TrainConfig) -> EmbeddingModel:
    """The configured model, adapters and checkpointing applied, initialised from ``seed``."""
    if config.model not in MODELS:
        raise ModelError(f"model {config.model!r} is not available for training; available: "
                         f"{', '.join(MODELS)}")
    torch.manual_seed(config.seed)  # the same initial weights on every process
    model = MODELS[config.model](config)
    if config.finetune == "lora":
        model.apply_adapters(config.lora_r, config.lora_alpha, config.lora_dropout,
                             config.lora_target_modules, config.use_dora)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates, by name (what a checkpoint stores)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


class ToyEncoder:
    """A trained toy folder as an ``mmeb`` encoder:
    ``mmeb run --model vlm2vec.model:ToyEncoder --checkpoint OUT --split sample``."""

    name = "vlm2vec-toy"

    def __init__(self, checkpoint: str, device: str | None = None, batch_size: int = 64) -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device or "cpu")
        self.model = ToyEmbedder.load(Path(checkpoint)).to(self.device).eval()
        self.batch_size = batch_size
        self.config = {"checkpoint": checkpoint, "input": "raw MMEB string + image",
                       **self.model.options}

    def encode(self, items: Sequence[Any], *, side: Any, task: Any) -> Any:  # noqa: ARG002
        inputs = []
        for item in items:
            if item.pil_image is not None and item.image_path is None:
                raise ModelError(f"{self.name} reads images from files; {item.origin} has an "
                                 "in-memory image only")
            inputs.append(Input(item.raw, item.image_path, item.origin))
        out = []
        with torch.inference_mode():
            for i in range(0, len(inputs), self.batch_size):
                batch = self.model.collate(inputs[i : i + self.batch_size], str(side))
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out.append(self.model.encode(batch).float().cpu())
        return torch.cat(out).numpy() if out else torch.zeros(0, self.model.options["dim"])
