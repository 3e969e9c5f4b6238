"""What every adapter shares, whatever the model family.

:class:`AdapterBase` checks the common options (``--checkpoint``, ``--device``, ``--dtype``,
``batch_size``), fails early with the pip extra to install when a model library is missing,
tells a local checkpoint from a Hub id, turns loading failures (offline Hub included) into
one-line errors and builds the ``config`` recorded with every result. How a family turns
items into vectors lives in its own base: :mod:`.two_tower` for CLIP-style models, :mod:`.vlm`
for vision-language models. Model libraries are imported only when an adapter is built, so
importing this module (or any adapter module) never imports torch.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from mmeb.encoder import ALL_MODALITIES
from mmeb.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mmeb.items import Item, Side
    from mmeb.registry import ModelEntry
    from mmeb.tasks import TaskSpec

T = TypeVar("T")


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


#: Weight formats the adapters never read (they load safetensors, or one tensors-only adapter
#: ``.bin``): skipped when a Hub snapshot is fetched.
UNUSED_WEIGHT_FILES = ("pytorch_model*.bin", "*.msgpack", "*.h5", "*.onnx", "*.ot", "tf_model*",
                       "flax_model*", "*.gguf")


def model_facts(family: str) -> ModelEntry | None:
    """The registry entry of a built-in family (None for a third party's own subclass)."""
    from mmeb.registry import BUILTIN_MODELS

    return next((e for e in BUILTIN_MODELS if e.name == family and not e.alias_of), None)


def local_revision(folder: Path) -> str:
    """A short digest naming the contents of a local checkpoint folder in results (file names,
    sizes and JSON configs; see :mod:`mmeb.revision`)."""
    from mmeb.revision import checkpoint_digest

    return f"local-{checkpoint_digest(folder)[:16]}"


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


def batches(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]




class AdapterBase(ABC):
    """The option handling and loading shared by every built-in adapter.

    A subclass sets the class attributes and implements :meth:`_load`; it parses its own
    options before calling ``super().__init__`` so that a bad option is refused before anything
    is loaded. The constructor resolves, in this order: the batch size, the model libraries,
    the checkpoint (a missing local directory is an error), the device, the dtype (the
    subclass's :meth:`_default_dtype` when none is given), then loads.
    """

    family: ClassVar[str]  # registry name (mmeb.registry), also the prefix of ``name``
    required_modules: ClassVar[tuple[str, ...]]
    default_batch_size: ClassVar[int] = 32
    modalities: frozenset[str] = ALL_MODALITIES

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        revision: str | None = None,
        workers: int = 0,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ModelError(f"workers must be 0 (preprocess in this process) or a positive "
                             f"number of worker processes, got {workers!r}")
        #: DataLoader worker processes that preprocess the next batches while the model runs
        #: (``--model-arg workers=N``; 0: preprocessing inside ``encode``, in this process).
        self.preprocess_workers = workers
        self.batch_size_given = batch_size is not None
        self.batch_size = parse_batch_size(self.default_batch_size if batch_size is None
                                           else batch_size)
        requested_dtype = resolve_dtype(dtype) if dtype is not None else None
        require_modules(self.family, self.extra, self.required_modules)
        facts = model_facts(self.family)
        if checkpoint is None and revision is None and facts is not None:
            revision = facts.revision  # the registry pins the revision of its default only
        #: What the user named (a Hub id, a folder or a ``package:`` folder); ``self.checkpoint``
        #: is where files are read from, the local snapshot of a Hub id once resolved. A
        #: packaged model is recorded by its ``package:`` name, not by the folder it is
        #: installed in, so results stay valid for another install of the same package.
        self.checkpoint_id = str(checkpoint or self.default_checkpoint)
        from mmeb.registry import packaged_checkpoint

        self.checkpoint = packaged_checkpoint(self.checkpoint_id)
        self.revision: str | None = revision
        local = self._local_path()
        if looks_like_path(local) and not Path(local).expanduser().exists():
            raise ModelError(f"checkpoint directory not found: {self.checkpoint}")
        self.device = resolve_device(device)
        self.dtype = requested_dtype or self._default_dtype()
        self.name = encoder_name(self.family, self.checkpoint_id)
        with loading_errors(self.family, self.checkpoint_id, local=self._is_local()):
            self.checkpoint, self.revision = self._resolve_checkpoint()
            self._load()

    @property
    def default_checkpoint(self) -> str:
        """The registry's default checkpoint of this family (a ``package:`` one as named)."""
        facts = model_facts(self.family)
        if facts is None or not facts.default_checkpoint:
            raise ModelError(f"model {self.family!r} has no default checkpoint; pass --checkpoint")
        return facts.default_checkpoint

    @property
    def extra(self) -> str:
        """The pip extra that installs this family's libraries (from the registry)."""
        facts = model_facts(self.family)
        return facts.extra if facts is not None and facts.extra else "all"

    def _hub_repo(self) -> str | None:
        """The Hub repository to snapshot before loading, or None when the checkpoint is a
        local folder (or a name the model library resolves itself)."""
        if self._is_local() or looks_like_path(self.checkpoint) or self.checkpoint.count("/") != 1:
            return None
        return self.checkpoint

    def _resolve_checkpoint(self) -> tuple[str, str | None]:
        """(where to read the files, the revision they are).

        A Hub id is fetched (or found in the local cache, offline) at ``self.revision`` as one
        snapshot, so every file of the model comes from the same commit and the result can name
        it; a local folder is identified by a digest of its file names, sizes and configs.
        """
        repo = self._hub_repo()
        if repo is None:
            folder = Path(self._local_path()).expanduser()
            return self.checkpoint, local_revision(folder) if folder.is_dir() else None
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(repo, revision=self.revision,
                                          ignore_patterns=list(UNUSED_WEIGHT_FILES)))
        return str(snapshot), snapshot.name

    @abstractmethod
    def _load(self) -> None:
        """Load weights and preprocessing from ``self.checkpoint`` onto ``self.device``."""

    # -- preprocessing apart from the forward pass ---------------------------------------

    @abstractmethod
    def _preprocess(self, items: Sequence[Item], *, side: Side, task: TaskSpec | None) -> Any:
        """Everything ``encode`` does before the model runs (images read and resized, text
        tokenised, batches padded), on the CPU and without touching ``self.model``."""

    @abstractmethod
    def encode_prepared(self, prepared: Any) -> np.ndarray:
        """The float32 ``(n, d)`` vectors of what :meth:`_preprocess` made of ``n`` items:
        ``encode(items)`` equals ``encode_prepared(_preprocess(items))``."""

    def preprocessor(self, *, side: Side, task: TaskSpec | None) -> PreprocessStep:
        """The picklable preprocessing of one side of one task, for DataLoader workers."""
        return PreprocessStep(self, side, task)

    def _without_model(self) -> AdapterBase:
        """A shallow copy without its torch modules: what a worker process needs, and cheap
        to send there (tokenizers and image processors stay)."""
        import torch

        clone = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.nn.Module):
                setattr(clone, name, None)
        return clone

    def _default_dtype(self) -> str:
        """The dtype when ``--dtype`` is not given (``self.device`` is already set)."""
        return "float32"

    def _model_config(self) -> dict[str, Any]:
        """Settings of the loaded model that shape its vectors (recorded in results)."""
        return {}

    def _policy_config(self) -> dict[str, Any]:
        """The family's own options (fusion, pooling, ...), recorded after the model's."""
        return {}

    def _local_path(self) -> str:
        """``self.checkpoint`` read as a filesystem path (without any library prefix)."""
        return self.checkpoint

    def _is_local(self) -> bool:
        return Path(self._local_path()).expanduser().exists()

    @property
    def config(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "checkpoint": self.checkpoint_id,
            "revision": self.revision,
            **self._model_config(),
            **self._policy_config(),
            "dtype": self.dtype,
            "device": self.device,
            "batch_size": self.batch_size,
        }

    def _torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)  # type: ignore[no-any-return]


class PreprocessStep:
    """An adapter's preprocessing for one side of one task, apart from its model.

    Picklable (the adapter is copied without its torch modules), so that
    ``torch.utils.data.DataLoader`` workers can run it on the next batches, whatever the
    start method, while the model runs the forward pass on the current one.
    """

    def __init__(self, adapter: AdapterBase, side: Side, task: TaskSpec | None) -> None:
        self.adapter = adapter._without_model()
        self.side = side
        self.task = task

    def __call__(self, items: Sequence[Item]) -> Any:
        return self.adapter._preprocess(items, side=self.side, task=self.task)
