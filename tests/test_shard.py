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


# --- a failure on one process reaches every process ------------------------------------------


class Board:
    """What two threads standing in for two processes share: a barrier and a slot per rank."""

    def __init__(self, world: int) -> None:
        import threading

        self.barrier = threading.Barrier(world, timeout=20)  # a hang fails, it does not hang
        self.slots: list = [None] * world


class ThreadGroup(ShardGroup):
    """A process group of threads: the collectives ``run`` uses, over a shared board."""

    def __init__(self, rank: int, world: int, board: Board) -> None:
        super().__init__(rank=rank, world=world, local_rank=rank)
        object.__setattr__(self, "board", board)

    def exchange(self, value):
        board = self.board  # type: ignore[attr-defined]
        board.barrier.wait()
        board.slots[self.rank] = value
        board.barrier.wait()
        values = list(board.slots)
        board.barrier.wait()
        return values

    def broadcast(self, value):
        return self.exchange(value if self.is_writer else None)[0]

    def gather_rows(self, part):
        parts = [p for p in self.exchange(part) if p.size]
        return np.concatenate(parts) if parts else part

    def broadcast_rows(self, rows):
        return self.broadcast(rows)


def run_on_threads(monkeypatch, call, world: int = 2) -> list:
    """``call(rank)`` on ``world`` threads, each seeing its own ThreadGroup; what each returned
    or raised, by rank."""
    import threading

    import mmeb.encoding
    import mmeb.runner

    board, local = Board(world), threading.local()
    monkeypatch.setattr(mmeb.runner, "current_group", lambda: local.group)
    monkeypatch.setattr(mmeb.encoding, "current_group", lambda: local.group)
    outcomes: list = [None] * world

    def body(rank: int) -> None:
        local.group = ThreadGroup(rank, world, board)
        try:
            outcomes[rank] = call(rank)
        except BaseException as exc:  # what each rank raised is its outcome
            outcomes[rank] = exc

    threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a rank is still waiting"
    return outcomes


@pytest.fixture
def planned_run(tmp_path):
    from mmeb.random_encoder import RandomEncoder
    from mmeb.runner import RunConfig, run
    from mmeb.tasks import get_task

    data = tmp_path / "data"
    colour_classification(data)
    colour_t2i(data)
    config = RunConfig(model="random", data_dir=str(data), output_dir=tmp_path / "out",
                       progress=False, batch_size=4)
    tasks = [get_task("ImageNet-1K"), get_task("MSCOCO_t2i")]
    return lambda _rank: run(config, tasks, encoder=RandomEncoder())


def test_two_thread_ranks_run_as_one_process(planned_run, monkeypatch):
    # The stand-in group is faithful: a run on it writes what a single process writes.
    rank0, rank1 = run_on_threads(monkeypatch, planned_run)
    assert not isinstance(rank0, BaseException), rank0
    assert not isinstance(rank1, BaseException), rank1
    assert rank0.computed == ["ImageNet-1K", "MSCOCO_t2i"]
    assert rank1.results == []


def test_a_planning_error_on_rank_0_is_raised_on_every_rank(planned_run, monkeypatch, tmp_path):
    from mmeb.errors import ResultsError
    from mmeb.runner import folder_lock

    (tmp_path / "out").mkdir()
    with folder_lock(tmp_path / "out" / "random"):  # another run holds the results folder
        outcomes = run_on_threads(monkeypatch, planned_run)
    assert all(isinstance(o, ResultsError) for o in outcomes), outcomes
    assert str(outcomes[0]) == str(outcomes[1])
    assert "is in use by another mmeb run" in str(outcomes[1])


def test_a_planning_error_on_rank_1_is_raised_on_rank_0_and_frees_the_folder(
        planned_run, monkeypatch, tmp_path):
    import mmeb.runner
    from mmeb.errors import DataError
    from mmeb.runner import folder_lock

    real = mmeb.runner.resolve_source

    def missing_on_rank_1(task, **kwargs):
        if mmeb.runner.current_group().rank == 1:
            raise DataError(f"{task.name}: no data on this node; copy it or pass --data-dir")
        return real(task, **kwargs)

    monkeypatch.setattr(mmeb.runner, "resolve_source", missing_on_rank_1)
    outcomes = run_on_threads(monkeypatch, planned_run)
    assert all(isinstance(o, DataError) for o in outcomes), outcomes
    assert str(outcomes[0]) == str(outcomes[1]) == (
        "ImageNet-1K: no data on this node; copy it or pass --data-dir")
    with folder_lock(tmp_path / "out" / "random"):  # rank 0 let go of the results folder
        pass
    assert not list((tmp_path / "out").rglob("*.json"))


def test_an_unexpected_planning_error_is_one_line_on_the_other_ranks(planned_run, monkeypatch):
    import mmeb.runner
    from mmeb.errors import MMEBError

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(mmeb.runner, "_plan", lambda *a: broken() if
                        mmeb.runner.current_group().rank == 0 else [])
    rank0, rank1 = run_on_threads(monkeypatch, planned_run)
    assert isinstance(rank0, RuntimeError)  # its own process keeps the traceback
    assert isinstance(rank1, MMEBError)
    assert str(rank1) == ("process 0 of 2 failed while planning the run (RuntimeError: disk "
                          "gone); see its output for the traceback")


@pytest.mark.slow
def test_torchrun_planning_error_on_rank_0_stops_every_process(tmp_path):
    pytest.importorskip("torch.distributed")
    data = tmp_path / "data"
    colour_classification(data)
    (tmp_path / "logged.py").write_text(ENCODER)
    common = ["--model", f"{tmp_path / 'logged.py'}:build", "--tasks", "ImageNet-1K",
              "--data-dir", str(data), "--no-progress", "--output-dir", str(tmp_path / "out")]
    _run(common, [sys.executable], tmp_path / "1.log")
    # Rank 0 alone reads the stored result and refuses it (another --limit): before any plan
    # is shared. Every process must end with that error instead of waiting for the plan.
    logs = tmp_path / "logs"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), "--log-dir", str(logs), "--redirects", "3",
         "-m", "mmeb", "run", *common, "--limit", "5"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "ENCODE_LOG": str(tmp_path / "2.log")})
    assert done.returncode != 0
    errors = sorted(p.read_text().strip() for p in logs.rglob("stderr.log"))
    assert len(errors) == 2, errors
    assert errors[0] == errors[1], errors
    assert errors[0].startswith("error: ")
    assert "was computed with other settings" in errors[0]
    assert len(errors[0].splitlines()) == 1
    assert not (tmp_path / "2.log").exists()  # nothing encoded
