"""Sharded runs under torchrun write what one process writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmeb_fixtures import colour_classification, colour_t2i

from mmeb.shard import ShardGroup

ENCODER = """
import os
from mmeb.random_encoder import RandomEncoder

class Logged(RandomEncoder):
    def encode(self, items, *, side, task):
        with open(os.environ["ENCODE_LOG"], "a") as log:
            log.write(f"{os.environ.get('RANK', '0')} {len(items)}\\n")
        return super().encode(items, side=side, task=task)

def build():
    return Logged()
"""

# Differ by design: how long it took, when, and which libraries the process had loaded
# (a sharded process has torch for its process group).
VOLATILE = ("timings", "date", "versions")


def test_shares_cover_every_input_once_in_order():
    for n in (0, 1, 5, 967):
        for world in (1, 2, 3):
            parts = [np.arange(n)[ShardGroup(rank=r, world=world).share(n)]
                     for r in range(world)]
            assert np.concatenate(parts).tolist() == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], launcher: list[str], log: Path) -> None:
    env = {**os.environ, "ENCODE_LOG": str(log)}
    done = subprocess.run([*launcher, "-m", "mmeb", "run", *args], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def _documents(folder: Path) -> dict[str, dict]:
    out = {}
    # The writer's lock file (<output>/.<model>.lock) stays by design; nothing else may.
    files = [p for p in folder.rglob("*")
             if p.is_file() and not (p.name.startswith(".") and p.suffix == ".lock")]
    for path in sorted(files):
        assert path.suffix == ".json", path
        assert not path.name.startswith("."), path
        document = json.loads(path.read_text())
        for key in VOLATILE:
            document.pop(key)
        out[str(path.relative_to(folder))] = document
    return out


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_same_result_files(tmp_path):
    pytest.importorskip("torch.distributed")
    data = tmp_path / "data"
    colour_classification(data)
    colour_t2i(data)
    (tmp_path / "logged.py").write_text(ENCODER)
    common = ["--model", f"{tmp_path / 'logged.py'}:build", "--tasks", "ImageNet-1K,MSCOCO_t2i",
              "--data-dir", str(data), "--no-progress", "--batch-size", "3"]
    _run([*common, "--output-dir", str(tmp_path / "one")], [sys.executable], tmp_path / "1.log")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port())]
    _run([*common, "--output-dir", str(tmp_path / "two"), "--cache-dir",
          str(tmp_path / "cache")], torchrun, tmp_path / "2.log")
    one, two = _documents(tmp_path / "one"), _documents(tmp_path / "two")
    assert list(one) == ["build/ImageNet-1K.json", "build/MSCOCO_t2i.json"]
    assert one == two

    def encoded(log: Path) -> dict[str, int]:
        per_rank: dict[str, int] = {}
        for line in log.read_text().splitlines():
            rank, n = line.split()
            per_rank[rank] = per_rank.get(rank, 0) + int(n)
        return per_rank

    unique = 12 + 8 + 8 + 8  # ImageNet-1K queries, class names; MSCOCO_t2i captions, images
    assert encoded(tmp_path / "1.log") == {"0": unique}
    assert encoded(tmp_path / "2.log") == {"0": unique // 2, "1": unique // 2}
    # Again from the cache rank 0 filled (a fresh output folder): the same files.
    torchrun[-1] = str(_free_port())
    _run([*common, "--output-dir", str(tmp_path / "three"), "--cache-dir",
          str(tmp_path / "cache")], torchrun, tmp_path / "3.log")
    assert _documents(tmp_path / "three") == one
    assert not (tmp_path / "3.log").exists()  # nothing encoded
