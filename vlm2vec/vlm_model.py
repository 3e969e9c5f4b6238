"""VLM backbones for training: the eval adapters of ``mmeb.models`` wrapped as embedding models.

A :class:`VLMEmbedder` holds one :class:`~mmeb.models.vlm.VLMEncoder` (the class ``mmeb run``
uses for the same backbone) and trains its Hugging Face model. Every step the vectors depend
on is the adapter's own: the text (``vlm_text`` with the backbone's image token, through
``_prepare``), the image resizing for ``image_resolution``, padding (``_collate``), the forward
pass (``_hidden_states``) and last-token pooling with normalisation (``embed``). Nothing of it is
repeated here, so a trained folder gives the same vectors under ``mmeb run``.

The output folder is what the adapter loads with ``--checkpoint``: with LoRA a peft adapter
folder naming its base, with ``merge: true`` or full fine-tuning a merged model folder (config,
safetensors weights, tokenizer and image-processor files).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmeb.errors import ModelError
from mmeb.instructions import parse
from mmeb.items import Item, Side
from vlm2vec.data import Input
from vlm2vec.model import EmbeddingModel, apply_lora, merged_module

if TYPE_CHECKING:
    from mmeb.models.vlm import VLMEncoder
    from vlm2vec.config import TrainConfig

#: The paper's LoRA targets: every projection of the language model's attention and MLP.
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Files that describe the tokenizer and image processor, copied next to merged weights.
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "preprocessor_config.json", "processor_config.json", "chat_template.json",
                   "chat_template.jinja", "generation_config.json")
#: Options the trainer sets itself (the device and fp32 master weights).
RESERVED_ARGS = ("checkpoint", "device", "dtype", "batch_size", "revision")


def _backbones() -> dict[str, tuple[str, str]]:
    """Training name -> (module under mmeb.models, class): the eval adapters built on
    VLMEncoder that read the raw MMEB string. The ``mmeb run`` name of each is the class's
    ``family``. E5-V is left out: its text drops or moves the task's instruction, which an
    MMEB-train row does not mark off from the text."""
    return {
        "qwen2vl": ("qwen2vl", "Qwen2VLEncoder"),
        "qwen2vl-2b": ("qwen2vl", "VLM2VecQwen2VL2B"),
        "qwen2vl-7b": ("qwen2vl", "VLM2VecQwen2VL7B"),
        "llava-next": ("llava_next", "LlavaNextEncoder"),
    }


def encoder_class(backbone: str) -> type[VLMEncoder]:
    import importlib

    module, name = _backbones()[backbone]
    cls: type[VLMEncoder] = getattr(importlib.import_module(f"mmeb.models.{module}"), name)
    return cls


def as_item(inp: Input) -> Item:
    """A training input as the harness's item (the adapters read its raw string)."""
    parsed = parse(inp.text, None)
    # An augmented picture stands in for the file (the adapter reads ``decoded`` first).
    return Item(raw=inp.text, text=parsed.text, image_path=inp.image, origin=inp.origin,
                decoded=inp.pixels)


def _side(side: str) -> Side:
    # A hard negative is a target-side input.
    return Side.QUERY if side == "query" else Side.TARGET


def collate_vlm(encoder: VLMEncoder, items: Sequence[Input], side: str) -> dict[str, Any]:
    """One side of training pairs as the eval adapter formats and batches it."""
    prepared = [encoder._prepare(as_item(i), side=_side(side), task=None) for i in items]
    return encoder._collate(prepared)


class VLMEmbedder(EmbeddingModel):
    """A VLM eval adapter's model in training: its formatting, forward pass and pooling."""

    default_lora_targets = LM_PROJECTIONS

    def __init__(self, encoder: VLMEncoder, *, merge: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.merge = merge
        # The only registered module: LoRA wraps it in place (peft injects its layers into the
        # same modules), so the encoder's own reference keeps running the adapted model.
        self.net: torch.nn.Module = encoder.model
        self.net.requires_grad_(True)

    @property
    def family(self) -> str:
        """The ``mmeb run --model`` name that loads this model's output folder."""
        return str(self.encoder.family)

    def collate(self, items: Sequence[Input], side: str) -> dict[str, Any]:
        return collate_vlm(self.encoder, items, side)

    def collator(self) -> Callable[[Sequence[Input], str], dict[str, Any]]:
        # The adapter without its torch modules: tokenizer and image processor only.
        return functools.partial(collate_vlm, self.encoder._without_model())

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        # The encoder moves a batch to its device; follow the weights wherever .to() put them.
        self.encoder.device = str(next(self.net.parameters()).device)
        return self.encoder.embed(batch)

    def apply_adapters(self, r: int, alpha: int, dropout: float,
                       target_modules: Sequence[str], use_dora: bool) -> None:
        if self.encoder.layout.adapter is not None:
            raise ModelError(
                f"checkpoint {self.encoder.checkpoint_id} is a LoRA adapter; a new adapter "
                "over it has no base to name: train from its merged folder, or use finetune: "
                "full")
        names = list(target_modules or self.default_lora_targets)
        # Only the language model's layers: vision towers reuse names such as q_proj (CLIP).
        pattern = rf".*language_model.*\.({'|'.join(map(_regex_escape, names))})"
        self.encoder.model.requires_grad_(False)
        if not any(_matches(pattern, n) for n, _ in self.encoder.model.named_modules()):
            raise ModelError(f"lora_target_modules {names}: no module of the "
                             f"{self.family} language model has these names")
        self.net = apply_lora(self.net, r, alpha, dropout, pattern, use_dora)

    def enable_gradient_checkpointing(self) -> None:
        # The HF model's own switch (renamed in transformers 5); non-reentrant, so frozen
        # inputs (LoRA) still get gradients.
        model = self.encoder.model
        options = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.merge or not hasattr(self.net, "peft_config"):
            self._save_merged(out_dir)
        else:
            self._save_adapter(out_dir)

    def _base_name(self) -> str:
        """How the adapter names its base: the user's Hub id, or the folder's absolute path."""
        named = self.encoder.checkpoint_id
        path = Path(named).expanduser()
        return str(path.resolve()) if path.exists() else named

    def _save_adapter(self, out_dir: Path) -> None:
        peft_model: Any = self.net
        peft_model.peft_config["default"].base_model_name_or_path = self._base_name()
        peft_model.save_pretrained(str(out_dir), safe_serialization=True)
        # Next to the adapter as in the released VLM2Vec folders: the LLaVA-NeXT adapter reads
        # its processor from the checkpoint it is given, not from the base.
        self._save_processor(out_dir)

    def _save_merged(self, out_dir: Path) -> None:
        model: Any = merged_module(self.net)
        model.save_pretrained(str(out_dir), safe_serialization=True)
        self._save_processor(out_dir)

    def _save_processor(self, out_dir: Path) -> None:
        """The tokenizer and image-processor files the encoder was built from."""
        source = Path(str(getattr(self.encoder, "processor_source", None)
                          or self.encoder.layout.model)).expanduser()
        if source.is_dir():
            # The files as they were (the adapters read the image processor's JSON directly).
            for name in PROCESSOR_FILES:
                if (source / name).is_file() and not (out_dir / name).exists():
                    shutil.copy2(source / name, out_dir / name)
            return
        for attr in ("processor", "tokenizer", "image_processor"):
            part = getattr(self.encoder, attr, None)
            if part is not None and hasattr(part, "save_pretrained"):
                part.save_pretrained(str(out_dir))


def _regex_escape(name: str) -> str:
    import re

    return re.escape(name)


def _matches(pattern: str, name: str) -> bool:
    import re

    return re.fullmatch(pattern, name) is not None


def build_vlm(backbone: str) -> Callable[[TrainConfig], EmbeddingModel]:
    """The ``MODELS`` builder of one backbone."""

    def build(config: TrainConfig) -> EmbeddingModel:
        cls = encoder_class(backbone)
        reserved = [k for k in RESERVED_ARGS if k in config.model_args]
        if reserved:
            raise ModelError(f"model_args {reserved[0]!r} is set by the trainer; use the "
                             "config keys checkpoint, device and precision instead")
        checkpoint = config.checkpoint or cls.default_base
        if checkpoint is None:
            raise ModelError(f"model {backbone} needs checkpoint: the base VLM to train (a "
                             "Hub id or a local folder)")
        # fp32 weights on CPU; the trainer moves them and autocasts to bf16 on GPU.
        encoder = cls(checkpoint, device="cpu", dtype="float32", **config.model_args)
        return VLMEmbedder(encoder, merge=config.merge)

    return build
