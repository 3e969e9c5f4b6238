"""What the vision-language embedders (VLM2Vec, E5-V) have in common.

A VLM embedder reads MMEB's raw string with ``<|image_1|>`` swapped for its backbone's image
token (every other byte kept, trailing newline included), runs the language model over text and
image tokens together, and takes the final hidden state of the last real token, L2-normalised.
This module holds each step once; the trainer imports the same functions.

:class:`VLMEncoder` owns the steps around the model: text building, image loading and resizing,
sorting by length and putting results back in order, batching, ``torch.inference_mode``,
pooling, normalisation, dtype (bf16 on CUDA, fp32 on CPU), LoRA adapter folders, batch sizes
that fit the device, and ``config``. A backbone subclass loads its model and processor and
implements three steps: :meth:`~VLMEncoder._prepare` (one item's processor output),
:meth:`~VLMEncoder._collate` (pad a list of them into a batch) and
:meth:`~VLMEncoder._hidden_states` (the final layer's states for a batch).
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mmeb.errors import ModelError
from mmeb.instructions import swap_image_token
from mmeb.items import Item, Side

from .base import AdapterBase, batches, loading_errors, looks_like_path
from .pixels import parse_pixel_pipeline, resize_two_pass
from .pooling import last_token_pool, normalize

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

    from mmeb.tasks import TaskSpec

#: ``image_resolution`` -> the square every image is resized to before the processor (aspect
#: ratio ignored, bicubic), as VLM2Vec's datasets do; ``native`` leaves images unchanged.
#: VLM2Vec v1.0's code maps ``low`` to 128²; the paper's low-resolution setting is 336².
RESOLUTIONS: dict[str, int | None] = {"high": 1344, "mid": 672, "low": 336, "native": None}
POOLINGS = ("last",)
PADDING_SIDES = ("left", "right")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."


def vlm_text(item: Item, image_token: str) -> str:
    """The string a VLM reads: the raw MMEB string with ``<|image_1|>`` swapped for
    ``image_token``, every other byte (trailing newline included) unchanged."""
    return swap_image_token(item.raw, image_token)


def parse_resolution(resolution: str) -> int | None:
    try:
        return RESOLUTIONS[resolution]
    except (KeyError, TypeError):
        names = ", ".join(RESOLUTIONS)
        raise ModelError(
            f"unknown image_resolution {resolution!r}; choose one of: {names}"
        ) from None


def resize_for_resolution(image: PILImage.Image, resolution: str) -> PILImage.Image:
    """Squash ``image`` to the square of ``resolution`` (``high`` 1344², ``mid`` 672²,
    ``low`` 336²) with bicubic resampling in Pillow 10's pass order, or return it unchanged for
    ``native``."""
    from PIL import Image

    side = parse_resolution(resolution)
    if side is None:
        return image
    return resize_two_pass(image, (side, side), Image.Resampling.BICUBIC)


def pad_token_ids(
    sequences: Sequence[torch.Tensor], pad_id: int, side: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D token id tensors to one ``(B, L)`` batch on ``side``; returns ids and mask."""
    import torch

    length = max(int(seq.shape[0]) for seq in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = int(seq.shape[0])
        span = slice(length - n, length) if side == "left" else slice(0, n)
        ids[row, span] = seq
        mask[row, span] = 1
    return ids, mask


def memory_aware_batch_size(
    free_bytes: int | None, per_item_bytes: int, *, cpu_default: int = 4, cap: int = 64
) -> int:
    """Items per forward pass: half the free accelerator memory over an item's activation
    estimate, between 1 and ``cap``; ``cpu_default`` when there is no accelerator (CPU runs are
    bound by compute, not memory)."""
    if free_bytes is None:
        return cpu_default
    return max(1, min(cap, int(free_bytes * 0.5) // max(1, per_item_bytes)))


# -- checkpoints: full model folders and LoRA adapter folders ---------------------------------


@dataclass(frozen=True)
class CheckpointLayout:
    """Where the weights come from: the full model, plus an optional LoRA adapter."""

    model: str  # a full model folder or Hub id
    adapter: str | None = None  # a LoRA adapter folder or Hub id, merged at load


def checkpoint_file(checkpoint: str, filename: str) -> str | None:
    """Local path of ``filename`` in a checkpoint folder or Hub repo (cached or fetched);
    None when the checkpoint has no such file or it cannot be reached."""
    folder = Path(checkpoint).expanduser()
    if folder.is_dir():
        path = folder / filename
        return str(path) if path.is_file() else None
    from transformers.utils import cached_file

    try:
        return cached_file(  # type: ignore[no-any-return]
            checkpoint,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError:
        return None


def resolve_layout(
    checkpoint: str, base: str | None, fallback_base: str | None = None
) -> CheckpointLayout:
    """A checkpoint with ``adapter_config.json`` is a LoRA adapter over ``base`` (default: the
    adapter's ``base_model_name_or_path``; when that is a folder of the machine the adapter was
    trained on, which does not exist here, ``fallback_base``); anything else is a full model."""
    config_path = checkpoint_file(checkpoint, ADAPTER_CONFIG)
    if config_path is None:
        if base is not None:
            raise ModelError(
                f"--model-arg base=... applies to a LoRA adapter checkpoint, and {checkpoint} "
                f"has no {ADAPTER_CONFIG}"
            )
        return CheckpointLayout(checkpoint)
    adapter_config = json.loads(Path(config_path).read_text())
    if base is None:
        base = adapter_config.get("base_model_name_or_path")
        if base and fallback_base and looks_like_path(base) and not Path(base).exists():
            base = fallback_base
    if not base:
        raise ModelError(
            f"{checkpoint}/{ADAPTER_CONFIG} names no base_model_name_or_path; pass "
            "--model-arg base=ID_OR_DIR"
        )
    return CheckpointLayout(str(base), adapter=checkpoint)


def load_adapter_weights(adapter: str) -> dict[str, torch.Tensor]:
    """The adapter's tensors, from safetensors, else from a tensors-only pickle."""
    for filename in ADAPTER_WEIGHTS:
        path = checkpoint_file(adapter, filename)
        if path is None:
            continue
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    raise ModelError(f"LoRA adapter {adapter} has none of {', '.join(ADAPTER_WEIGHTS)}")


def rename_adapter_keys(
    state: dict[str, torch.Tensor], renames: Sequence[tuple[str, str]]
) -> dict[str, torch.Tensor]:
    """Move adapter keys saved against an older module layout to the current one.

    Adapters trained under transformers 4.x name modules as the model was laid out then (e.g.
    ``model.layers.*`` where transformers 5 has ``model.language_model.layers.*``). Each
    ``(pattern, replacement)`` is a regular expression on the key without PEFT's
    ``base_model.model.`` prefix; the first that matches applies.
    """
    out = {}
    for key, value in state.items():
        inner = key.removeprefix(PEFT_PREFIX)
        for pattern, replacement in renames:
            inner, count = re.subn(pattern, replacement, inner, count=1)
            if count:
                break
        out[PEFT_PREFIX + inner] = value
    return out


def merge_lora(
    model: Any, adapter: str, renames: Sequence[tuple[str, str]]
) -> Any:
    """``model`` with the LoRA (or DoRA) adapter merged in, as VLM2Vec's ``load`` does with
    ``merge_and_unload``. Every adapter tensor must land in the model."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    config = LoraConfig.from_pretrained(adapter)
    config.inference_mode = True
    peft_model = get_peft_model(model, config)
    state = rename_adapter_keys(load_adapter_weights(adapter), renames)
    result: Any = set_peft_model_state_dict(peft_model, state)
    unexpected = list(result.unexpected_keys or [])
    missing = [key for key in (result.missing_keys or []) if "lora_" in key]
    if unexpected or missing:
        shown = ", ".join(sorted(unexpected or missing)[:2])
        raise ModelError(
            f"LoRA adapter {adapter} does not fit the model ({len(unexpected)} adapter tensors "
            f"without a module, {len(missing)} LoRA modules without a tensor, e.g. {shown}); "
            "pass the adapter's own base with --model-arg base=ID_OR_DIR"
        )
    return peft_model.merge_and_unload()


# -- the base class ---------------------------------------------------------------------------


class VLMEncoder(AdapterBase):
    """An :class:`~mmeb.encoder.Encoder` over a vision-language model, pooled at the last token.

    Options (``--model-arg``) on top of :class:`~.base.AdapterBase`'s: ``image_resolution``
    (``high``, ``mid``, ``low``, ``native``), ``pooling`` (``last``), ``normalize``,
    ``padding_side`` (``left``/``right``; vectors do not depend on it), ``attn_implementation``
    (passed to ``from_pretrained``), ``base`` (the base model of a LoRA adapter checkpoint) and
    ``pixel_pipeline`` (``transformers4``/``transformers5``, see :mod:`.pixels`).
    """

    required_modules: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    image_token: ClassVar[str]  # what replaces MMEB's <|image_1|>
    default_padding_side: ClassVar[str] = "right"
    default_resolution: ClassVar[str] = "high"
    #: Module renames from the layout an adapter was trained against (see rename_adapter_keys).
    adapter_key_renames: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: The base of the released adapter, used when its adapter_config.json names a folder that
    #: does not exist here.
    default_base: ClassVar[str | None] = None
    #: Sequence length of a typical image input at ``high`` resolution, for batch sizes.
    typical_tokens: ClassVar[int] = 2048
    default_batch_size: ClassVar[int] = 4
    #: Items prepared (and held in memory) at once before sorting by length.
    window_batches: ClassVar[int] = 4

    model: Any
    tokenizer: Any
    pad_id: int

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        image_resolution: str | None = None,
        pooling: str = "last",
        normalize: bool = True,
        padding_side: str | None = None,
        attn_implementation: str | None = None,
        base: str | None = None,
        pixel_pipeline: str = "transformers4",
        **options: Any,
    ) -> None:
        self.pixel_pipeline = parse_pixel_pipeline(pixel_pipeline)
        self.image_resolution = image_resolution or self.default_resolution
        parse_resolution(self.image_resolution)
        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if not isinstance(normalize, bool):
            raise ModelError(f"normalize must be true or false, got {normalize!r}")
        self.padding_side = padding_side or self.default_padding_side
        if self.padding_side not in PADDING_SIDES:
            raise ModelError(
                f"unknown padding_side {padding_side!r}; choose one of: {', '.join(PADDING_SIDES)}"
            )
        self.pooling = pooling
        self.normalize = normalize
        self.attn_implementation = attn_implementation
        self.base = base
        self.layout = CheckpointLayout("")
        super().__init__(checkpoint, **options)
        if not hasattr(self, "pad_id"):  # a subclass's _load may set its own
            pad = self.tokenizer.pad_token_id
            self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id or 0)
        if not self.batch_size_given:
            self.batch_size = self._auto_batch_size()

    # -- what a subclass provides -------------------------------------------------------

    @abstractmethod
    def _prepare(self, item: Item, *, side: Side, task: TaskSpec | None) -> dict[str, Any]:
        """One item's processor output, unbatched: ``input_ids`` (1-D LongTensor) plus any
        image tensors. Use :meth:`_text` and :meth:`_image` for the inputs."""

    @abstractmethod
    def _collate(self, prepared: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad prepared items into one batch on ``self.padding_side`` (see :meth:`_pad_text`);
        the batch must carry ``attention_mask``."""

    @abstractmethod
    def _hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        """The final layer's hidden states (after the last norm), ``(B, L, H)``."""

    # -- helpers for subclasses ---------------------------------------------------------

    def _text(self, item: Item, *, side: Side, task: TaskSpec | None) -> str:  # noqa: ARG002
        """The model's text for ``item``: the raw MMEB string with the image token swapped."""
        return vlm_text(item, self.image_token)

    def _image(self, item: Item) -> PILImage.Image | None:
        """The item's RGB image resized for ``image_resolution``, or None."""
        image = item.image
        return None if image is None else resize_for_resolution(image, self.image_resolution)

    def _load_weights(self, class_name: str | type, **kwargs: Any) -> Any:
        """``transformers.<class_name>`` (or a ``PreTrainedModel`` subclass given itself) from
        the checkpoint in eval mode on the device; for a LoRA adapter checkpoint, its base with
        the adapter merged in."""
        import transformers

        from .base import require_modules
        from .hf import load_pretrained

        if int(transformers.__version__.split(".")[0]) < 5:
            raise ModelError(
                f"the {self.family} model needs transformers 5 or newer (found "
                f'{transformers.__version__}); upgrade with: pip install -U "mmeb[{self.extra}]"'
            )
        self.layout = resolve_layout(self.checkpoint, self.base, self.default_base)
        source = self.layout.model
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.layout.adapter is not None and looks_like_path(source) and not Path(
            source
        ).expanduser().exists():
            raise ModelError(f"base model directory not found: {source} (from --model-arg base "
                             f"or {self.checkpoint}/{ADAPTER_CONFIG})")
        with loading_errors(self.family, source, local=Path(source).expanduser().exists()):
            model = load_pretrained(class_name, source, self._torch_dtype(), self.device, **kwargs)
        if self.layout.adapter is not None:
            require_modules(self.family, self.extra, ("peft",))
            model = merge_lora(model, self.layout.adapter, self.adapter_key_renames).eval()
        return model

    def _pad_text(self, prepared: list[dict[str, Any]]) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` of the prepared items, padded on
        ``self.padding_side`` with ``self.pad_id`` (default: the tokenizer's pad token, else its
        end-of-sequence token; masked either way)."""
        ids, mask = pad_token_ids([p["input_ids"] for p in prepared], self.pad_id,
                                  self.padding_side)
        return {"input_ids": ids, "attention_mask": mask}

    def _on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Batch tensors on the model's device; floating ones (pixels) in the model's dtype."""
        import torch

        out = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                dtype = self._torch_dtype() if value.is_floating_point() else None
                value = value.to(self.device, dtype=dtype)
            out[key] = value
        return out

    def _text_config(self) -> Any:
        return self.model.config.get_text_config()

    # -- encoding -----------------------------------------------------------------------

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Pooled (and, if set, normalised) float32 vectors of a collated batch, with autograd
        as the caller has it (the trainer calls this under grad)."""
        hidden = self._hidden_states(batch)
        pooled = last_token_pool(hidden, batch["attention_mask"].to(hidden.device))
        return normalize(pooled) if self.normalize else pooled.float()

    def encode(
        self, items: Sequence[Item], *, side: Side, task: TaskSpec | None = None
    ) -> np.ndarray:
        """Encode ``items`` to a float32 ``(n, d)`` array.

        Items are prepared a window at a time (a few batches, so that memory stays bounded),
        sorted by token count within the window, longest first (an out-of-memory error shows on
        the first batch), and written back in input order.
        """
        import torch

        out = np.zeros((len(items), self.dim), dtype=np.float32)
        window = self.batch_size * self.window_batches
        with torch.inference_mode():
            for start in range(0, len(items), window):
                self._embed_into(out, self._prepare_window(items, start, side=side, task=task))
        return out

    def _preprocess(self, items: Sequence[Item], *, side: Side, task: TaskSpec | None
                    ) -> list[tuple[list[int], dict[str, Any]]]:
        """The batches ``encode`` would run for ``items`` (same windows, same order), each with
        the rows it holds."""
        window = self.batch_size * self.window_batches
        return [pair for start in range(0, len(items), window)
                for pair in self._prepare_window(items, start, side=side, task=task)]

    def encode_prepared(self, prepared: list[tuple[list[int], dict[str, Any]]]) -> np.ndarray:
        import torch

        out = np.zeros((sum(len(rows) for rows, _ in prepared), self.dim), dtype=np.float32)
        with torch.inference_mode():
            self._embed_into(out, prepared)
        return out

    def _prepare_window(self, items: Sequence[Item], start: int, *, side: Side,
                        task: TaskSpec | None) -> list[tuple[list[int], dict[str, Any]]]:
        """Collated batches of the window of items from ``start``, sorted by length."""
        rows = range(start, min(len(items), start + self.batch_size * self.window_batches))
        prepared = [(row, self._prepare(items[row], side=side, task=task)) for row in rows]
        prepared.sort(key=lambda pair: -int(pair[1]["input_ids"].shape[0]))
        return [([row for row, _ in chunk], self._collate([p for _, p in chunk]))
                for chunk in batches(prepared, self.batch_size)]

    def _embed_into(self, out: np.ndarray, prepared: list[tuple[list[int], dict[str, Any]]]
                    ) -> None:
        for rows, batch in prepared:
            out[rows] = self.embed(batch).cpu().numpy()

    @property
    def dim(self) -> int:
        """Size of the output vectors: the language model's hidden size."""
        return int(self._text_config().hidden_size)

    # -- options ------------------------------------------------------------------------

    def _default_dtype(self) -> str:
        return "bfloat16" if str(self.device).startswith("cuda") else "float32"

    def _auto_batch_size(self) -> int:
        import torch

        free = None
        if str(self.device).startswith("cuda"):
            free = int(torch.cuda.mem_get_info(torch.device(self.device))[0])
        text = self._text_config()
        values = self.typical_tokens * (3 * int(text.intermediate_size) + 8 * int(text.hidden_size))
        per_item = values * torch.tensor([], dtype=self._torch_dtype()).element_size()
        return memory_aware_batch_size(free, per_item)

    def _model_config(self) -> dict[str, Any]:
        return {
            "base": self.layout.model if self.layout.adapter else None,
            "lora_adapter": self.layout.adapter,
            "model_class": type(self.model).__name__,
            "tokenizer": type(getattr(self, "tokenizer", None)).__name__,
            "image_token": self.image_token,
        }

    def _policy_config(self) -> dict[str, Any]:
        return {
            "image_resolution": self.image_resolution,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "padding_side": self.padding_side,
            "pixel_pipeline": self.pixel_pipeline,
            "attn_implementation": self.attn_implementation
            or getattr(self.model.config, "_attn_implementation", None),
            "batch_size_auto": not self.batch_size_given,
        }


# -- forward-pass pieces shared by the backbones ----------------------------------------------


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Token positions ``0..n-1`` over each row's real tokens (pads get 0), so that a padded
    row sees the positions it would see alone, whatever the padding side."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def scatter_image_features(
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_rows: torch.Tensor,
    features: torch.Tensor,
    image_token_id: int,
) -> torch.Tensor:
    """Put image features into the image-token positions of the rows that have an image.

    An MMEB string can carry the image token without an image (the raw WebQA and EDIS queries
    start with ``<|image_1|>``); such a row keeps the token's own embedding, as it would in a
    batch of its own, instead of receiving another row's features.
    """
    slots = (input_ids == image_token_id) & image_rows.to(input_ids.device)[:, None].bool()
    if int(slots.sum()) != int(features.shape[0]):
        raise ModelError(
            f"{int(slots.sum())} image tokens but {int(features.shape[0])} image features in a "
            "batch; the processor and the model disagree on the tokens per image"
        )
    mask = slots[..., None].expand_as(embeds)
    return embeds.masked_scatter(mask, features.to(embeds.dtype))
