"""``vlm2vec-tiny``: a Qwen2-VL of a few MB trained by ``vlm2vec train`` on the sample suite,
shipped inside the package (``weights/vlm2vec-tiny``).

It is an ordinary VLM2Vec Qwen2-VL checkpoint read by the Qwen2-VL adapter; only two defaults
differ. Its images keep their own size (``image_resolution=native``): the checkpoint's image
processor already resizes every picture to 96 x 96 (9 image tokens), and squashing to
1344 x 1344 first would only cost time. The weights are the packaged folder, whose files are
listed with their SHA-256 in its ``manifest.json`` (:func:`verify_packaged`).
"""

from __future__ import annotations

import json
from pathlib import Path

from mmeb.revision import file_sha256

from .qwen2vl import Qwen2VLEncoder

#: The packaged folder, relative to this package (the registry names it ``package:...``).
PACKAGED = "weights/vlm2vec-tiny"
MANIFEST = "manifest.json"


class VLM2VecTiny(Qwen2VLEncoder):
    family = "vlm2vec-tiny"
    default_resolution = "native"
    # 9 image tokens and a sentence: a CPU batch of 64 takes a few tens of milliseconds.
    default_batch_size = 64
    typical_tokens = 64


def packaged_folder() -> Path:
    return Path(__file__).resolve().parent / PACKAGED


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of ``folder`` except the manifest itself."""
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST}


def verify_packaged(folder: Path | None = None) -> list[str]:
    """Files of the packaged model that differ from its manifest (missing, extra or changed)."""
    folder = folder or packaged_folder()
    recorded: dict[str, str] = json.loads((folder / MANIFEST).read_text())["sha256"]
    actual = file_digests(folder)
    return sorted(name for name in set(recorded) | set(actual)
                  if recorded.get(name) != actual.get(name))
