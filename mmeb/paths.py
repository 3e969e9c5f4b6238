"""Where mmeb keeps downloaded and generated data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$MMEB_CACHE``, else ``$XDG_CACHE_HOME/mmeb``, else ``~/.cache/mmeb``."""
    if os.environ.get("MMEB_CACHE"):
        return Path(os.environ["MMEB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mmeb"
