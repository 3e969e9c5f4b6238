"""What names a local checkpoint: one digest of its files, for results and for the cache.

Weights are too large to hash on every load, so a file counts by its relative path and size;
small JSON configs (where a changed setting shows) count by their bytes too. Results name a
checkpoint without modification times (a copy of the same folder is the same model); the
embedding cache adds them, since reusing a vector computed from other weights of the same size
would be wrong where recomputing one is only slower.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: JSON files up to this size are hashed by content (configs, tokenizer settings, indexes).
_CONFIG_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 (hex) of one file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoint_digest(path: Path, *, mtimes: bool = False) -> str:
    """sha256 (hex) of the files of checkpoint folder (or single file) ``path``: each file's
    path relative to the folder and size, with ``mtimes`` its modification time (ns), and the
    bytes of its JSON files up to 1 MiB."""
    files = [(path.name, path)] if path.is_file() else [
        (p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]
    digest = hashlib.sha256()
    for rel, file in files:
        stat = file.stat()
        stamp = f"\0{stat.st_mtime_ns}" if mtimes else ""
        digest.update(f"{rel}\0{stat.st_size}{stamp}\n".encode())
        if file.suffix == ".json" and stat.st_size <= _CONFIG_BYTES:
            digest.update(file.read_bytes())
    return digest.hexdigest()
