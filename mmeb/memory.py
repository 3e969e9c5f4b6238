"""Keeping the process's resident memory close to what it holds.

Reading a task allocates and frees many mid-sized buffers (one set per batch of rows). Both
allocators in play keep freed pages for reuse: pyarrow's default pool (mimalloc) and the C
library's heap. Measured on a 100k-row task, they held 60 MB and 25 MB more than the data kept,
and the encoder's vectors came on top of that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Any


def use_system_memory_pool() -> None:
    """Allocate Arrow buffers with the C library's malloc unless ARROW_DEFAULT_MEMORY_POOL
    says otherwise (rows are read in small batches, where mimalloc's speed buys nothing)."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def release_freed_memory() -> None:
    """Hand pages freed so far back to the system (glibc's ``malloc_trim``; elsewhere, and
    where the C library has no such call, nothing happens)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (looked up once: ``find_library`` runs a subprocess)."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries without it
        return None
