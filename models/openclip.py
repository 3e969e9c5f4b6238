"""OpenCLIP models through the ``open_clip`` library (the paper's "OpenCLIP" baseline).

``--checkpoint`` takes what open_clip takes, plus plain paths and Hub ids:

- ``hf-hub:org/repo`` or ``org/repo``: config and weights from the Hub (or its cache);
- a directory (or ``local-dir:DIR``) holding ``open_clip_config.json`` and the weights;
- a built-in architecture name such as ``ViT-B-32`` with ``--model-arg pretrained=TAG`` (a
  pretrained tag of that architecture, or a weights file).

Vectors are ``encode_image`` / ``encode_text`` with ``normalize=False``, as in the paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb.errors import ModelError

from .two_tower import TwoTowerEncoder

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

HF_HUB = "hf-hub:"
LOCAL_DIR = "local-dir:"
# open_clip's names for our dtypes: its mixed precision keeps LayerNorms in float32.
PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def open_clip_name(checkpoint: str) -> str:
    """The ``model_name`` open_clip understands for a ``--checkpoint`` value."""
    if checkpoint.startswith((HF_HUB, LOCAL_DIR)):
        return checkpoint
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return f"{LOCAL_DIR}{path}"
    return f"{HF_HUB}{checkpoint}" if "/" in checkpoint else checkpoint


class OpenCLIPEncoder(TwoTowerEncoder):
    family = "openclip"
    required_modules = ("torch", "open_clip")

    model: Any
    preprocess: Any
    tokenizer: Any

    def __init__(
        self, checkpoint: str | None = None, *, pretrained: str | None = None, **options: Any
    ) -> None:
        self.pretrained = pretrained
        super().__init__(checkpoint, **options)

    def _local_path(self) -> str:
        return self.checkpoint.removeprefix(LOCAL_DIR)

    def _hub_repo(self) -> str | None:
        # open_clip resolves hf-hub: ids and its own pretrained tags itself.
        return None

    def _is_local(self) -> bool:
        name = open_clip_name(self.checkpoint)
        if name.startswith(LOCAL_DIR):
            return True
        if name.startswith(HF_HUB):
            return False
        # A built-in architecture: local unless its weights are a tag to download.
        return self.pretrained is None or Path(self.pretrained).expanduser().is_file()

    def _load(self) -> None:
        import open_clip

        self.model_name = open_clip_name(self.checkpoint)
        builtin = not self.model_name.startswith((HF_HUB, LOCAL_DIR))
        if self.pretrained is not None and not builtin:
            raise ModelError(
                "--model-arg pretrained=... applies only to a built-in open_clip architecture "
                f"name, not to {self.checkpoint} (which carries its own weights)"
            )
        if builtin and self.pretrained is None:
            tags = [tag for arch, tag in open_clip.list_pretrained() if arch == self.model_name]
            raise ModelError(
                f"{self.checkpoint} is an open_clip architecture without weights; add "
                f"--model-arg pretrained=TAG_OR_FILE (tags: {', '.join(tags) or 'none'})"
            )
        # create_model_from_pretrained refuses to return a model without its weights, where
        # create_model would only log a warning and go on with random ones.
        model, preprocess = open_clip.create_model_from_pretrained(
            self.model_name,
            pretrained=self.pretrained,
            precision=PRECISION[self.dtype],
            device=self.device,
        )
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(self.model_name)

    def _encode_images(self, images: list[PILImage.Image]) -> torch.Tensor:
        import torch

        pixels = torch.stack([self.preprocess(image) for image in images])
        pixels = pixels.to(self.device, self._torch_dtype())
        return self.model.encode_image(pixels)  # type: ignore[no-any-return]

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        # open_clip's tokenizers truncate to the model's context length (77 for CLIP).
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens)  # type: ignore[no-any-return]

    def _model_config(self) -> dict[str, Any]:
        return {
            "open_clip_model": self.model_name,
            "pretrained": self.pretrained,
            "max_text_tokens": getattr(self.tokenizer, "context_length", None),
        }
