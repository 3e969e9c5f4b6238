"""Probe encoders for the benchmarks: a fixed cost per item, counted and timed.

``build(ms=4)`` spends ``ms`` milliseconds per item in GIL-free work (sha256 over a buffer,
like a forward pass in torch), after reading each item's image through ``Item.image`` as an
adapter does (decoding there unless the engine decoded it ahead). ``mode="sleep"`` waits
instead of computing (a GPU forward seen from the CPU); ``torch=True`` imports torch first, as
every built-in adapter does. The process's totals go to the JSON
file named by ``$PROBE_STATS`` (``.rank<N>`` appended under a launcher) at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import time

import numpy as np

from mmeb.encoder import ALL_MODALITIES
from mmeb.random_encoder import hashed_vector

_BUFFER = os.urandom(1 << 16)


class Probe:
    modalities = ALL_MODALITIES

    def __init__(self, ms: float = 4.0, mode: str = "spin", variant: int = 0,
                 dim: int = 32, torch: bool = False, **_unused: object) -> None:
        if torch:  # load what every built-in adapter loads, so its cost is in both runs
            import torch as _torch  # noqa: F401
        self.name = "probe"
        self.ms, self.mode, self.dim = float(ms), mode, int(dim)
        self.config = {"ms": self.ms, "mode": mode, "variant": int(variant), "dim": self.dim}
        self.items = 0
        self.calls = 0
        self.encode_s = 0.0  # wall time inside encode()
        self.compute_s = 0.0  # of which the fixed per-item work
        self.decode_s = 0.0  # of which reading images
        atexit.register(self._report)

    def encode(self, items, *, side, task):  # noqa: ARG002
        start = time.perf_counter()
        out = []
        for item in items:
            t0 = time.perf_counter()
            image = item.image
            size = image.size if image is not None else (0, 0)
            t1 = time.perf_counter()
            self.decode_s += t1 - t0
            deadline = t1 + self.ms / 1000
            if self.mode == "sleep":
                time.sleep(self.ms / 1000)
            else:
                while time.perf_counter() < deadline:
                    hashlib.sha256(_BUFFER).digest()
            self.compute_s += time.perf_counter() - t1
            out.append(hashed_vector(f"{self.config['variant']}\0{item.raw}\0{item.image_path}"
                                     f"\0{size}", self.dim))
        self.items += len(items)
        self.calls += 1
        self.encode_s += time.perf_counter() - start
        return np.stack(out)

    def _report(self) -> None:
        path = os.environ.get("PROBE_STATS")
        if not path:
            return
        if os.environ.get("WORLD_SIZE", "1") != "1":
            path = f"{path}.rank{os.environ.get('RANK', '0')}"
        with open(path, "w") as handle:
            json.dump({"items": self.items, "calls": self.calls, "encode_s": self.encode_s,
                       "compute_s": self.compute_s, "decode_s": self.decode_s}, handle)


def build(**options: object) -> Probe:
    return Probe(**options)  # type: ignore[arg-type]
