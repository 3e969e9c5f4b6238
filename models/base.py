"""What the two-tower adapters (CLIP, OpenCLIP, SigLIP, BLIP, BLIP-2) have in common.

A subclass loads its checkpoint and encodes a batch of images and a batch of texts;
:class:`TwoTowerEncoder` does the rest: option checking, device and dtype, the instruction
policy, batching, ``torch.inference_mode``, fusion of image+text items, and the ``config``
recorded with every result. Model libraries are imported only when an adapter is built, so
importing this module (or any adapter module) never imports torch.
"""

from __future__ import annotations

import importlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from mmeb.encoder import ALL_MODALITIES
from mmeb.errors import ModelError
from mmeb.items import Item, Side

from .fusion import Fusion, assemble, parse_fusion, parts_used

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

    from mmeb.tasks import TaskSpec

T = TypeVar("T")


class InstructionPolicy(str, Enum):
    """What a two-tower model reads from an MMEB string besides the image."""

    NONE = "none"  # the text without MMEB's instruction (the paper's setting)
    PREPEND = "prepend"  # instruction + " " + text

    def __str__(self) -> str:
        return self.value


def parse_instruction_policy(value: str | InstructionPolicy | None) -> InstructionPolicy:
    # ``--model-arg instruction=none`` arrives as None: the registry converts "none" to None.
    if value is None:
        return InstructionPolicy.NONE
    try:
        return InstructionPolicy(value)
    except ValueError:
        names = ", ".join(policy.value for policy in InstructionPolicy)
        raise ModelError(f"unknown instruction policy {value!r}; choose one of: {names}") from None


def model_text(item: Item, policy: InstructionPolicy) -> str:
    """The text a two-tower model encodes for ``item`` (may be empty)."""
    if policy is InstructionPolicy.PREPEND and item.instruction:
        return f"{item.instruction} {item.text}" if item.text else item.instruction
    return item.text


DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def resolve_dtype(dtype: str | None) -> str:
    """Canonical torch dtype name; float32 unless the user asks for less."""
    if dtype is None:
        return "float32"
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ModelError(
            f"unknown dtype {dtype!r}; choose one of: float32, float16, bfloat16"
        ) from None


def resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ModelError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but torch sees no CUDA device here")
    return str(device)


def parse_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ModelError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def require_modules(family: str, extra: str, modules: Sequence[str]) -> None:
    """Fail with the pip extra to install when a model library is missing."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ModelError(
                f"the {family} model needs the Python package {module!r}, which cannot be "
                f'imported ({exc}); install it with: pip install "mmeb[{extra}]"'
            ) from None


def hub_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@contextmanager
def loading_errors(family: str, checkpoint: str, *, local: bool) -> Iterator[None]:
    """Turn a library's loading failure into a one-line :class:`ModelError`.

    ``local`` says whether the checkpoint is on disk; a remote one that fails while the Hub is
    switched off gets the message that says so, instead of the library's retry trace.
    """
    try:
        yield
    except ModelError:
        raise
    except Exception as exc:
        if hub_offline() and not local:
            raise ModelError(
                f"cannot load checkpoint {checkpoint} offline; pass --checkpoint DIR with a "
                "local copy or unset HF_HUB_OFFLINE"
            ) from exc
        hint = " (install the package it names)" if isinstance(exc, ImportError) else ""
        raise ModelError(
            f"cannot load {family} checkpoint {checkpoint}: {type(exc).__name__}: "
            f"{first_sentence(str(exc))}{hint}"
        ) from exc


def first_sentence(message: str) -> str:
    """Library messages run over several lines; a one-line error keeps their first sentence."""
    line = (message.strip().splitlines() or [""])[0]
    end = line.find(". ")
    return line[: end + 1] if end >= 0 else line


def looks_like_path(checkpoint: str) -> bool:
    """A filesystem path rather than a Hub id (``org/name``) or a library's own name."""
    return checkpoint.startswith(("/", ".", "~")) or "\\" in checkpoint or checkpoint.count("/") > 1


def encoder_name(family: str, checkpoint: str) -> str:
    """A short, file-name-safe label: the checkpoint's last component, prefixed by the family
    unless it already names it (``clip-vit-large-patch14``, ``openclip-CLIP-ViT-H-14-...``)."""
    label = checkpoint.split(":", 1)[-1].rstrip("/\\")
    label = re.split(r"[/\\]", label)[-1] or family
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", label)
    return label if label.lower().startswith(family) else f"{family}-{label}"


def _rgb(item: Item) -> PILImage.Image:
    image = item.image
    if image is None:  # callers only pass items with an image
        raise ModelError(f"{item.origin or 'item'} has no image")
    return image


def batches(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class TwoTowerEncoder(ABC):
    """An :class:`~mmeb.encoder.Encoder` over a model with one image and one text tower.

    Subclasses set the class attributes and implement :meth:`_load`, :meth:`_encode_images`
    and :meth:`_encode_texts`; the constructor's keyword arguments are the options every
    two-tower adapter accepts (``--checkpoint``, ``--device``, ``--dtype`` and the
    ``--model-arg`` keys ``fusion``, ``instruction`` and ``batch_size``).
    """

    family: ClassVar[str]  # registry name, also the prefix of ``name``
    extra: ClassVar[str]  # pip extra that installs the libraries below
    required_modules: ClassVar[tuple[str, ...]]
    default_checkpoint: ClassVar[str]
    modalities: frozenset[str] = ALL_MODALITIES

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        fusion: str | None = None,
        instruction: str | None = None,
        batch_size: int = 32,
    ) -> None:
        self.fusion: Fusion = parse_fusion(fusion)
        self.instruction: InstructionPolicy = parse_instruction_policy(instruction)
        self.batch_size = parse_batch_size(batch_size)
        self.dtype = resolve_dtype(dtype)
        require_modules(self.family, self.extra, self.required_modules)
        self.checkpoint = str(checkpoint or self.default_checkpoint)
        local = self._local_path()
        if looks_like_path(local) and not Path(local).expanduser().exists():
            raise ModelError(f"checkpoint directory not found: {self.checkpoint}")
        self.device = resolve_device(device)
        self.name = encoder_name(self.family, self.checkpoint)
        with loading_errors(self.family, self.checkpoint, local=self._is_local()):
            self._load()
        self._dim: int | None = None

    # -- what a subclass provides -------------------------------------------------------

    @abstractmethod
    def _load(self) -> None:
        """Load weights and preprocessing from ``self.checkpoint`` onto ``self.device``."""

    @abstractmethod
    def _encode_images(self, images: list[PILImage.Image]) -> torch.Tensor:
        """One batched forward: RGB images -> ``(n, d)`` features."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """One batched forward: texts -> ``(n, d)`` features (truncated to the model's limit)."""

    def _model_config(self) -> dict[str, Any]:
        """Settings of the loaded model that shape its vectors (recorded in results)."""
        return {}

    def _local_path(self) -> str:
        """``self.checkpoint`` read as a filesystem path (without any library prefix)."""
        return self.checkpoint

    def _is_local(self) -> bool:
        return Path(self._local_path()).expanduser().exists()

    # -- the Encoder protocol ------------------------------------------------------------

    def encode(
        self,
        items: Sequence[Item],
        *,
        side: Side,  # noqa: ARG002 (the protocol's signature; see the docstring)
        task: TaskSpec | None = None,  # noqa: ARG002
    ) -> np.ndarray:
        """Encode ``items`` to a float32 ``(n, d)`` array (``side`` and ``task`` do not change
        a two-tower model's vectors: the instruction policy is the same for every task)."""
        import torch

        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [model_text(item, self.instruction) for item in items]
        plan = [
            parts_used(self.fusion, has_image=item.has_image, has_text=bool(text))
            for item, text in zip(items, texts, strict=True)
        ]
        image_rows = [row for row, (image, _) in enumerate(plan) if image]
        text_rows = [row for row, (_, text) in enumerate(plan) if text]
        with torch.inference_mode():
            # Images are read per batch, so a task never holds all its images in memory.
            image_vectors = self._batched(
                lambda chunk: self._encode_images([_rgb(item) for item in chunk]),
                [items[row] for row in image_rows],
            )
            text_vectors = self._batched(self._encode_texts, [texts[row] for row in text_rows])
        return assemble(self.fusion, len(items), image_rows, image_vectors, text_rows, text_vectors)

    @property
    def dim(self) -> int:
        """Size of the output vectors."""
        if self._dim is None:
            import torch

            with torch.inference_mode():
                self._dim = int(self._encode_texts([""]).shape[1])
        return self._dim

    @property
    def config(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "checkpoint": self.checkpoint,
            **self._model_config(),
            "fusion": self.fusion.value,
            "instruction": self.instruction.value,
            "dtype": self.dtype,
            "device": self.device,
            "batch_size": self.batch_size,
        }

    def _batched(self, encode: Callable[[list[T]], torch.Tensor], values: list[T]) -> np.ndarray:
        chunks = [
            encode(list(chunk)).float().cpu().numpy() for chunk in batches(values, self.batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def _torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)  # type: ignore[no-any-return]
