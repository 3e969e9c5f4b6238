"""An encoder that knows the answers: it reads the generator's latent keys.

It proves the sample tasks are well posed end to end (loader, item keys, scoring): every query
gets the vector of its gold's latent key, every candidate the vector of its own key, and keys
differ between the gold and every other candidate of a row, so a correct pipeline scores
hit@1 = 1.0 on every sample task. It uses no pixels and no words, only the sidecar
``eval/<Task>/latents.parquet`` that the generator writes next to each eval file (row by row:
``qry_key`` and ``tgt_keys``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmeb.encoder import ALL_MODALITIES
from mmeb.errors import DataError
from mmeb.items import Item, Side
from mmeb.random_encoder import hashed_vector
from mmeb.tasks import TaskSpec

LATENTS_FILE = "latents.parquet"
Index = dict[tuple[str, str, str], str]  # (side, raw string, image id) -> latent key


def image_id(path: str | None) -> str:
    """``<Task>/<file>``: what identifies a sample image however its root was spelled."""
    if not path:
        return ""
    return "/".join(Path(path).parts[-2:])


class OracleEncoder:
    """Embeds each item as a fixed random unit vector of its latent key (equal keys, equal
    vectors; distinct keys nearly orthogonal in ``dim`` dimensions)."""

    modalities = ALL_MODALITIES

    def __init__(self, root: str | Path, dim: int = 256) -> None:
        root = Path(root)
        # Accept the suite's root or its eval/ folder (what --data-dir points at).
        self.eval_dir = root / "eval" if (root / "eval").is_dir() else root
        self.name = "oracle"
        self.dim = int(dim)
        self.config = {"dim": self.dim}
        self._indexes: dict[str, Index] = {}

    def _index(self, task: TaskSpec) -> Index:
        folder = task.folder
        if folder not in self._indexes:
            self._indexes[folder] = self._read(task, self.eval_dir / folder)
        return self._indexes[folder]

    @staticmethod
    def _read(task: TaskSpec, folder: Path) -> Index:
        import pyarrow.parquet as pq

        latents_path = folder / LATENTS_FILE
        if not latents_path.is_file():
            raise DataError(f"{task.name}: no {latents_path}; the oracle needs a generated "
                            "sample suite")
        data = sorted(folder.glob(f"{task.file_prefix}-*.parquet"))
        if len(data) != 1:
            raise DataError(f"{task.name}: expected one {task.file_prefix}-*.parquet in {folder}")
        rows = pq.read_table(data[0]).to_pylist()
        latents = pq.read_table(latents_path).to_pylist()
        if len(latents) != len(rows):
            raise DataError(f"{task.name}: {len(rows)} rows but {len(latents)} latent rows")
        index: Index = {}
        query, target = Side.QUERY.value, Side.TARGET.value
        entries = []
        for row, latent in zip(rows, latents, strict=True):
            entries.append((query, row["qry_text"], row["qry_img_path"], latent["qry_key"]))
            entries.extend((target, text, path, key) for text, path, key in zip(
                row["tgt_text"], row["tgt_img_path"], latent["tgt_keys"], strict=True))
        ids: dict[str, str] = {}  # a pool image appears in many rows: parse its path once
        for side, raw, path, key in entries:
            if path not in ids:
                ids[path] = image_id(path)
            entry = (side, raw, ids[path])
            if index.setdefault(entry, key) != key:
                raise DataError(f"{task.name}: one {side} input has two latent keys "
                                f"({index[entry]!r} and {key!r})")
        return index

    def _vector(self, key: str) -> np.ndarray:
        vector = hashed_vector(key, self.dim)
        return vector / np.linalg.norm(vector)

    def encode(self, items: Sequence[Item], *, side: Side, task: TaskSpec) -> np.ndarray:
        index = self._index(task)
        side_name = Side(side).value
        vectors = []
        for item in items:
            key = index.get((side_name, item.raw, image_id(item.image_path)))
            if key is None:
                raise DataError(f"{task.name}: the oracle has no latent for {side_name} input "
                                f"{item.raw!r} with image {item.image_path!r}")
            vectors.append(self._vector(key))
        return np.stack(vectors).astype(np.float32)
