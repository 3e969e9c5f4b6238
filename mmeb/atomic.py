"""All-or-nothing file writes: the bytes go to a hidden temporary file beside the target, are
synced to disk, and the temporary is renamed over the target. A reader, or a run killed at any
moment, sees the old file or the new one, never a part. Each caller names its temporaries (the
pattern its own clean-up of killed runs looks for)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, tmp: Path) -> None:
    """Write ``data`` to ``path`` through ``tmp`` (same folder, must not exist yet).

    The file is created with mode 0666 filtered by the umask (0644 usually), like any file the
    user writes; on any error the temporary is removed and the target left as it was."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
