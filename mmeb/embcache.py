"""An on-disk cache of embeddings, shared across tasks and runs of the same model.

A vector is reused only for the same model (adapter name, adapter config, model spec,
checkpoint, revision, dtype, model options and the adapter's source code: one folder per such
identity) and, inside it, for the same side, raw string, instruction of the item and of the
task's side, image path and image *content* (sha256 of the file's bytes, so a file rewritten at
the same path is a new input). Nothing else about a task enters the key, so tasks whose candidates
overlap share entries.

Layout (safe formats only: ``.npy`` read with ``allow_pickle=False`` and JSON)::

    <root>/<model digest>/model.json            the identity, readable
    <root>/<model digest>/<segment>.npy         float64 (n, d) L2-normalised vectors
    <root>/<model digest>/<segment>.json        {"keys": [...n], "sha256": of the .npy, ...}

A segment is what one (task, side) computed. Its ``.npy`` is written first and its index last,
each atomically, so a reader never sees an index without its vectors. A segment whose bytes no
longer match the recorded checksum (or that cannot be read) is deleted and its vectors are
recomputed.

Segments and temporary files are named after the host and process that write them
(``<host>-<pid>-<random>``). A process killed while writing leaves a temporary file or vectors
without an index; neither is ever read, and the next process of the same host that opens the
folder deletes those of writers no longer running. Files of other hosts (a cache on a shared file
system) are left alone: their writers cannot be checked from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmeb.atomic import write_atomic
from mmeb.errors import DataError, MMEBError
from mmeb.items import Item, Side

log = logging.getLogger("mmeb")

CACHE_FORMAT = 1
MODEL_FILE = "model.json"


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _writer_tag() -> str:
    """``<host>-<pid>``: who writes a file, so that leftovers of dead writers can be found."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """All or nothing, under a temporary named after its writer (see ``_LEFTOVER``)."""
    tmp = path.with_name(f".{path.name}.{_writer_tag()}-{secrets.token_hex(4)}.tmp")
    write_atomic(path, data, tmp)


def _write_json(path: Path, document: Any) -> None:
    _write_bytes_atomic(path, (json.dumps(document, indent=1) + "\n").encode())


_LEFTOVER = re.compile(r"(?:\..+\.)?(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]+(?:\.tmp|\.npy)")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete what writers of this host that no longer run left in ``folder``: temporary files
    and vectors whose index was never written (neither is ever read)."""
    host = _writer_tag().rsplit("-", 1)[0]
    removed = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = _LEFTOVER.fullmatch(path.name)
        if match is None or match["host"] != host or _running(int(match["pid"])):
            continue
        if path.suffix == ".npy" and path.with_suffix(".json").exists():
            continue  # a complete segment
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


@dataclass
class _Entry:
    segment: str
    row: int


class EmbeddingCache:
    """The cached vectors of one model identity (a folder under ``root``)."""

    def __init__(self, root: str | os.PathLike[str], identity: Mapping[str, Any]) -> None:
        self.root = Path(root).expanduser()
        self.identity = {"cache_format": CACHE_FORMAT, **identity}
        self.folder = self.root / _digest(self.identity)[:32]
        self._index: dict[str, _Entry] | None = None
        self._image_digests: dict[tuple[str, int, int, int], str] = {}
        self.hits = 0
        self.misses = 0

    # keys -------------------------------------------------------------------------------

    def keys(self, items: Sequence[Item], *, side: Side, side_instruction: str | None
             ) -> list[str]:
        """One key per item: side, raw string, instructions, image path and image content.

        The path is there because the engine treats two paths as two inputs (``Item.key``),
        and an encoder may too (the random encoder's vectors depend on it); the content because
        a path may be given new bytes."""
        return [_digest([str(side), item.raw, item.instruction, side_instruction,
                         item.image_path, self._image_digest(item)]) for item in items]

    def _image_digest(self, item: Item) -> str | None:
        if item.pil_image is not None:
            image = item.pil_image
            head = f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode()
            return "pil:" + hashlib.sha256(head + image.tobytes()).hexdigest()
        if item.image_path is None:
            return None
        # Content, not path: the stat tuple only memoises within this run (one image often
        # serves many tasks); size, mtime or inode of a rewritten file differ.
        try:
            stat = os.stat(item.image_path)
            memo = (item.image_path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
            if memo not in self._image_digests:
                data = Path(item.image_path).read_bytes()
                self._image_digests[memo] = hashlib.sha256(data).hexdigest()
        except OSError as exc:
            raise DataError(f"{item.origin}: cannot read image {item.image_path} ({exc}); "
                            "replace it or pass --image-dir") from None
        return self._image_digests[memo]

    # reading ----------------------------------------------------------------------------

    def _load_index(self) -> dict[str, _Entry]:
        if self._index is None:
            self._index = {}
            # Once per process, before anything is read or written here.
            for path in remove_leftovers(self.folder):
                log.info(f"embedding cache: removed {path.name}, left by a stopped run")
            for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
                if path.name == MODEL_FILE:
                    continue
                try:
                    keys = json.loads(path.read_text(encoding="utf-8"))["keys"]
                except (OSError, ValueError, KeyError, TypeError):
                    log.warning(f"embedding cache: unreadable index {path}; dropping it")
                    self._drop(path.stem)
                    continue
                for row, key in enumerate(keys):
                    self._index[key] = _Entry(path.stem, row)
        return self._index

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(hit mask, vectors of the hits in order)``; corrupt segments count as misses."""
        index = self._load_index()
        by_segment: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            entry = index.get(key)
            if entry is not None:
                by_segment.setdefault(entry.segment, []).append(position)
        hit = np.zeros(len(keys), dtype=bool)
        found: dict[int, np.ndarray] = {}
        for segment, positions in by_segment.items():
            vectors = self._read_segment(segment)
            if vectors is None:
                continue
            rows = [index[keys[p]].row for p in positions]
            for position, vector in zip(positions, vectors[rows], strict=True):
                found[position] = vector
                hit[position] = True
        self.hits += int(hit.sum())
        self.misses += int(len(keys) - hit.sum())
        if not found:
            return hit, None
        return hit, np.stack([found[p] for p in np.flatnonzero(hit).tolist()])

    def _read_segment(self, segment: str) -> np.ndarray | None:
        try:
            meta = json.loads((self.folder / f"{segment}.json").read_text(encoding="utf-8"))
            data = (self.folder / f"{segment}.npy").read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ValueError("checksum mismatch")
            vectors = np.load(io.BytesIO(data), allow_pickle=False)
            if vectors.shape != (len(meta["keys"]), meta["dim"]) or vectors.dtype != np.float64:
                raise ValueError(f"shape {vectors.shape} {vectors.dtype}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(f"embedding cache: segment {self.folder / segment} is corrupt ({exc}); "
                        "recomputing its vectors")
            self._drop(segment)
            return None
        return vectors

    def _drop(self, segment: str) -> None:
        index = self._index or {}
        for key in [k for k, e in index.items() if e.segment == segment]:
            del index[key]
        for suffix in (".json", ".npy"):  # index first: never an index without vectors
            (self.folder / f"{segment}{suffix}").unlink(missing_ok=True)

    # writing ----------------------------------------------------------------------------

    def put(self, keys: Sequence[str], vectors: np.ndarray, *, label: str) -> None:
        """Store ``vectors`` (one row per key) as a new segment."""
        if not len(keys):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float64)
        index = self._load_index()
        self.folder.mkdir(parents=True, exist_ok=True)
        model_file = self.folder / MODEL_FILE
        if not model_file.exists():
            _write_json(model_file, self.identity)
        segment = f"{_writer_tag()}-{secrets.token_hex(16)}"
        buffer = io.BytesIO()
        np.save(buffer, vectors, allow_pickle=False)
        data = buffer.getvalue()
        _write_bytes_atomic(self.folder / f"{segment}.npy", data)
        _write_json(self.folder / f"{segment}.json", {
            "label": label, "dim": int(vectors.shape[1]),
            "sha256": hashlib.sha256(data).hexdigest(), "keys": list(keys)})
        for row, key in enumerate(keys):
            index[key] = _Entry(segment, row)


# listing and removing (``mmeb cache ls|rm``) ---------------------------------------------


@dataclass
class CachedModel:
    digest: str
    identity: dict[str, Any]
    vectors: int
    segments: int
    size_bytes: int

    @property
    def label(self) -> str:
        ident = self.identity
        return str(ident.get("model") or ident.get("adapter") or "?")


def list_models(root: str | os.PathLike[str]) -> list[CachedModel]:
    root = Path(root).expanduser()
    models = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            identity = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a model folder of this cache
        vectors = segments = 0
        for index in folder.glob("*.json"):
            if index.name == MODEL_FILE:
                continue
            try:
                vectors += len(json.loads(index.read_text(encoding="utf-8"))["keys"])
                segments += 1
            except (OSError, ValueError, KeyError, TypeError):
                continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        models.append(CachedModel(folder.name, identity, vectors, segments, size))
    return models


def remove_models(root: str | os.PathLike[str], selectors: Sequence[str],
                  *, everything: bool = False) -> list[CachedModel]:
    """Delete the model folders whose digest starts with, or whose model name equals, a
    selector (all with ``everything``); returns what was removed."""
    models = list_models(root)
    if not everything and not selectors:
        raise MMEBError("mmeb cache rm: name a model or digest prefix (see `mmeb cache ls`), "
                        "or pass --all")
    chosen = models if everything else [
        m for m in models
        if any(m.digest.startswith(s) or m.label == s for s in selectors)]
    if not chosen and not everything:
        raise MMEBError(f"mmeb cache rm: nothing in {root} matches {', '.join(selectors)} "
                        "(see `mmeb cache ls`)")
    for model in chosen:
        shutil.rmtree(Path(root).expanduser() / model.digest)
    return chosen
