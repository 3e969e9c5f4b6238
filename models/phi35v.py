"""VLM2Vec on Phi-3.5-V (``TIGER-Lab/VLM2Vec-Full``, and ``microsoft/Phi-3.5-vision-instruct``
with ``TIGER-Lab/VLM2Vec-LoRA`` merged in), on the project's own Phi-3.5-V module
(:mod:`mmeb.models.phi3v`; transformers 5 has no Phi-3-V class and the checkpoints' remote code
does not import under it).

What VLM2Vec v1's evaluation did, reproduced here:

- The text is MMEB's string as it is: ``<|image_1|>`` is Phi-3.5-V's own image tag. Each text
  chunk around the tag is tokenized on its own (with its own ``<s>``), the tag becomes the
  image's token count, and text-only inputs are cut at ``max_length`` 256 (``--max_len 256``);
  inputs with an image are never cut.
- Images go to the processor at their own size (no 1344² squash): the HD transform with
  ``num_crops`` 4 (``--num_crops 4``) decides their crops.
- The vector is the last real token's final hidden state, L2-normalised; right padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb.errors import ModelError
from mmeb.items import Item, Side

from .base import UNUSED_WEIGHT_FILES, loading_errors, looks_like_path
from .vlm import ADAPTER_CONFIG, VLMEncoder, resolve_layout

if TYPE_CHECKING:
    import torch

    from mmeb.tasks import TaskSpec

PHI35V_BASE = "microsoft/Phi-3.5-vision-instruct"
DEFAULT_NUM_CROPS = 4  # MMEB's evaluation setting (the original's argument default is 16)
DEFAULT_MAX_LENGTH = 256  # VLM2Vec's --max_len for Phi-3.5-V; applies to text-only inputs
DEFAULT_VISION = "clip-vit-large-patch14-336"  # what config records without vision_config


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")
    return value


class VLM2VecPhi35V(VLMEncoder):
    """VLM2Vec's Phi-3.5-V embedder. Options on top of :class:`~.vlm.VLMEncoder`'s:
    ``num_crops`` (HD transform crop budget, default 4), ``vision_config`` (a JSON file of
    ``CLIPVisionConfig`` fields replacing the fixed ViT-L/14-336 tower), ``max_length`` (text-only
    inputs, default 256; ``none`` for no limit) and ``processor`` (a folder or Hub id the
    tokenizer and normalisation come from; default the model, i.e. the base of an adapter)."""

    family = "vlm2vec-phi35v"
    image_token = "<|image_1|>"
    default_padding_side = "right"
    default_resolution = "native"
    # At num_crops 4 an image takes at most 757 tokens (2x2 crops), plus the instruction.
    typical_tokens = 800

    processor: Any

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        num_crops: int = DEFAULT_NUM_CROPS,
        vision_config: str | None = None,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        processor: str | None = None,
        **options: Any,
    ) -> None:
        self.num_crops = _positive_int("num_crops", num_crops)
        self.max_length = None if max_length is None else _positive_int("max_length", max_length)
        if vision_config is not None and not Path(str(vision_config)).expanduser().is_file():
            raise ModelError(
                f"vision_config file not found: {vision_config} (pass a JSON file of "
                "CLIPVisionConfig fields, or leave it out for ViT-L/14-336)"
            )
        self.vision_config = None if vision_config is None else str(vision_config)
        self.processor_source = processor
        self.base_revision: str | None = None
        super().__init__(checkpoint, **options)

    # -- loading ------------------------------------------------------------------------

    def _local_folder(self, source: str, what: str, hint: str = "") -> tuple[str, str | None]:
        """(a local folder holding ``source``, its revision when fetched from the Hub): the
        module reads local files, so a Hub id is fetched as one snapshot first."""
        folder = Path(source).expanduser()
        if folder.is_dir():
            return str(folder), None
        if looks_like_path(source):
            raise ModelError(f"{what} directory not found: {source}{hint}")
        from huggingface_hub import snapshot_download

        with loading_errors(self.family, source, local=False):
            snapshot = Path(snapshot_download(source, ignore_patterns=list(UNUSED_WEIGHT_FILES)))
        return str(snapshot), snapshot.name

    def _load(self) -> None:
        from .phi3v import load
        from .phi3v.processing import Phi3VProcessor

        self.layout = resolve_layout(self.checkpoint, self.base, self.default_base)
        if self.layout.adapter is None:
            model_folder, _ = self._local_folder(self.layout.model, "checkpoint")
        else:
            hint = f" (from --model-arg base or {self.checkpoint}/{ADAPTER_CONFIG})"
            model_folder, self.base_revision = self._local_folder(
                self.layout.model, "base model", hint
            )
        self.attn_implementation = self.attn_implementation or "sdpa"
        self.model, self.processor = load(
            model_folder,
            adapter=self.layout.adapter,
            vision_config=self.vision_config,
            num_crops=self.num_crops,
            max_length=self.max_length,
            device=self.device,
            dtype=self._torch_dtype(),
            attn_implementation=self.attn_implementation,
        )
        if self.processor_source is not None:
            folder, _ = self._local_folder(self.processor_source, "processor")
            self.processor = Phi3VProcessor.from_pretrained(
                folder, num_crops=self.num_crops, max_length=self.max_length
            )
        self.processor_source = self.processor_source or self.layout.model
        self.tokenizer = self.processor.tokenizer
        self.pad_id = self.processor.pad_token_id

    # -- the three steps ----------------------------------------------------------------

    def _prepare(self, item: Item, *, side: Side, task: TaskSpec | None) -> dict[str, Any]:
        out = self.processor(self._text(item, side=side, task=task), self._image(item))
        return {key: value for key, value in out.items() if value is not None}

    def _collate(self, prepared: list[dict[str, Any]]) -> dict[str, Any]:
        return self.processor.collate(prepared, padding_side=self.padding_side)  # type: ignore[no-any-return]

    def _hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model(**self._on_device(batch))  # type: ignore[no-any-return]

    def _text_config(self) -> Any:
        return self.model.language_model.config

    # -- config -------------------------------------------------------------------------

    def _model_config(self) -> dict[str, Any]:
        return {
            **super()._model_config(),
            "base_revision": self.base_revision,
            "processor": self.processor_source,
            "num_crops": self.num_crops,
            "vision_config": self.vision_config or DEFAULT_VISION,
            "max_length": self.max_length,
        }


class VLM2VecPhi35VLoRA(VLM2VecPhi35V):
    """``TIGER-Lab/VLM2Vec-LoRA`` (a DoRA adapter) merged into Phi-3.5-vision-instruct."""

    family = "vlm2vec-phi35v-lora"
    default_base = PHI35V_BASE
