"""``python tests/kill_at_event.py MODULE ARGS...``: run ``python -m MODULE ARGS...`` and SIGKILL
it at the N-th file-system event, as a preemption landing inside a write would.

An event is the moment just before or just after one call that changes files: ``os.replace``,
``os.rename``, ``os.unlink``, ``os.rmdir``, ``os.mkdir``, ``os.fsync`` and, for ``vlm2vec``,
``torch.save`` and ``safetensors.torch.save_file`` (these also in the middle: the file is cut to
half its bytes before the kill, as a kill inside the write leaves it). So the kill can land
between a vector file and its index, inside or between a checkpoint's files, between its rename
and the rotation of older ones, or in the middle of a folder's removal.

Environment: ``KILL_AT_EVENT=N`` (0 or unset: never kill); ``EVENT_LOG=FILE``: append one line
per event, ``<n> <call> <first path>``, so that an uninterrupted run tells how many events a
run has and where each one falls.
"""

from __future__ import annotations

import functools
import os
import runpy
import signal
import sys
from collections.abc import Callable
from typing import Any

KILL_AT = int(os.environ.get("KILL_AT_EVENT", "0") or 0)
LOG = os.environ.get("EVENT_LOG")
_count = 0


def _event(call: str, args: tuple[Any, ...]) -> None:
    global _count
    _count += 1
    if LOG:
        where = _path(args) or ""
        with open(LOG, "a", encoding="utf-8") as handle:
            handle.write(f"{_count} {call} {where}\n")
    if _count == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def _path(args: tuple[Any, ...]) -> str | None:
    return next((os.fspath(a) for a in args if isinstance(a, (str, os.PathLike))), None)


def _watched(call: str, function: Callable[..., Any], *, writes: bool = False
             ) -> Callable[..., Any]:
    """``function`` with an event before and after it; for a function that writes a whole file
    (``writes``) also one in the middle, where a kill leaves the file with half its bytes."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _event(f"{call}<", args)
        result = function(*args, **kwargs)
        if writes:
            path = _path(args)
            if _count + 1 == KILL_AT and path is not None:
                size = os.path.getsize(path)
                with open(path, "r+b") as handle:
                    handle.truncate(size // 2)
            _event(f"{call}~", args)
        _event(f"{call}>", args)
        return result

    return wrapper


def _watch_os() -> None:
    for name in ("replace", "rename", "unlink", "rmdir", "mkdir", "fsync"):
        setattr(os, name, _watched(name, getattr(os, name)))


def _watch_torch() -> None:
    import safetensors.torch
    import torch

    torch.save = _watched("torch.save", torch.save, writes=True)
    safetensors.torch.save_file = _watched("save_file", safetensors.torch.save_file,
                                           writes=True)


if __name__ == "__main__":
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    if module.startswith("vlm2vec"):
        _watch_torch()
    _watch_os()
    runpy.run_module(module, run_name="__main__", alter_sys=True)
