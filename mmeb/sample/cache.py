"""The cached copy of the sample suite, generated on first use.

A copy is complete exactly when its ``manifest.json`` exists: the generator writes it last, and
the copy is generated in a temporary sibling folder that is renamed into place in one step.
A crash leaves only a temporary folder (removed by a later call once it is old), never a
half-written copy under the final name; two processes racing both generate, one rename wins and
the other uses the winner's copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from mmeb.errors import MMEBError
from mmeb.paths import cache_dir
from mmeb.sample.spec import MANIFEST, SAMPLE_VERSION, SCALES

log = logging.getLogger("mmeb")

#: A temporary folder this old belongs to a crashed generation (a full one takes minutes).
STALE_AFTER_S = 6 * 3600


def sample_root(scale: str = "small") -> Path:
    """Where the cached copy of ``scale`` lives (whether or not it exists yet)."""
    if scale not in SCALES:
        raise MMEBError(f"unknown sample scale {scale!r}; valid scales: {', '.join(SCALES)}")
    return cache_dir() / "sample" / f"{SAMPLE_VERSION}-seed0-{scale}"


def ensure_sample(scale: str = "small") -> Path:
    """Root of the cached sample suite (``eval/`` and ``train/`` inside), generated if absent."""
    root = sample_root(scale)
    if (root / MANIFEST).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    from mmeb.sample.generate import generate

    log.info("generating the %s sample suite in %s (first use only)", scale, root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        generate(tmp, seed=0, scale=scale)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the copy is ordinary cached data
        if root.exists() and not (root / MANIFEST).is_file():
            _discard(root)  # not a copy we wrote (ours always carry a manifest)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / MANIFEST).is_file():
                raise
            # Another process finished first; its copy is identical.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _discard(path: Path) -> None:
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    with contextlib.suppress(FileNotFoundError):  # already gone
        os.rename(path, aside / path.name)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_temporaries(root: Path) -> None:
    now = time.time()
    for tmp in root.parent.glob(f".{root.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            continue
