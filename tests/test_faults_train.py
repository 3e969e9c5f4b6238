"""Fault suite of the trainer: ``vlm2vec train`` SIGKILLed at seeded moments, then resumed.

The toy model with DoRA adapters (dropout on, so the RNG state must resume), hard negatives and
GradCache, 8 steps, a checkpoint every 2 steps, the newest 2 kept. A kill lands either at a
seeded file-system event (tests/kill_at_event.py: before, inside or after each checkpoint file,
the rename, the removal of an old checkpoint, the final model) or at a seeded wall-clock moment.
After each kill every checkpoint under a ``step-<N>`` name must be complete (every file there,
each readable, its weights and optimizer state equal to the uninterrupted run's at that step),
and a final model file, if any, whole. The resumed run must then equal the uninterrupted one:
metrics of every step, final weights, the checkpoints kept, and no hidden leftover.

One trial (a kill while a checkpoint is written; the killed run is then refused without
``--resume`` and with changed settings) runs in the default suite;
``pytest -m slow tests/test_faults_train.py -s`` runs 24 and prints its figures.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from vlm2vec_fixtures import REPO, env, flags, quick, small_suite

from vlm2vec.config import build_config
from vlm2vec.trainer import CHECKPOINTS, TrainError, list_checkpoints, train

KILLER = REPO / "tests" / "kill_at_event.py"
CHECKPOINT_FILES = {"weights.safetensors", "optimizer.pt", "scheduler.pt", "config.yaml",
                    "state.json", "rng-rank0.pt"}
# A mode says where the kill lands: "checkpoint" at a seeded one of the events of checkpoint
# writing, "any" at a seeded event or moment; the others at one chosen event:
# "last-rename" right after the last checkpoint is renamed into place, before older ones are
# rotated out; "rotation" inside the removal of the oldest checkpoint; "final-write" inside the
# write of the final model's weights.
DEFAULT_TRIALS = (("last-rename", 0),)
SLOW_TRIALS = (("rotation", 1), ("final-write", 2), *(("checkpoint", s) for s in range(100, 106)),
               *(("any", s) for s in range(200, 216)))


def settings_for(suite: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    settings = {"finetune": "lora", "preset": "dora-code", "hard_negatives": True,
                "gc_chunk_size": 4, "max_steps": 8, "save_steps": 2, "keep_checkpoints": 2}
    return quick(suite / "train", out, **{**settings, **overrides})


def command(settings: dict[str, Any]) -> list[str]:
    return [sys.executable, str(KILLER), "vlm2vec", "train", *flags(settings)]


def load(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def metrics(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("step", "loss", "lr", "grad_norm")} for r in rows]


def close(a: Any, b: Any) -> bool:
    """Equal up to float rounding (the reference runs in this process, the killed run in
    another), compared through tensors, dicts and lists."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return abs(a - b) <= 1e-5 * max(abs(a), 1e-8)
    return bool(a == b)


@dataclass
class Reference:
    suite: Path
    events: list[str]  # the uninterrupted run's file-system events, in order
    wall_s: float
    out: Path  # the uninterrupted run (checkpoints rotated as configured)
    every: Path  # the same run keeping every checkpoint, to compare any step with


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    suite = small_suite(tmp_path_factory)
    base = tmp_path_factory.mktemp("train-faults")
    out, log = base / "whole", base / "events.log"
    start = time.perf_counter()
    done = subprocess.run(command(settings_for(suite, out)), env={**env(), "EVENT_LOG": str(log)},
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    every = base / "every"
    train(build_config(overrides=settings_for(suite, every, keep_checkpoints=100)))
    assert close(metrics(every), metrics(out))
    assert [p.name for p in list_checkpoints(every)] == [f"step-{s:08d}" for s in (2, 4, 6, 8)]
    events = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    return Reference(suite, events, wall, out, every)


def check_checkpoint(folder: Path, reference: Reference) -> None:
    """A checkpoint under its final name is complete and is the uninterrupted run's."""
    assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES, folder
    step = int(folder.name.split("-")[1])
    assert json.loads((folder / "state.json").read_text())["step"] == step, folder
    same = reference.every / CHECKPOINTS / folder.name
    for name in ("weights.safetensors", "optimizer.pt", "scheduler.pt"):
        assert close(load(folder / name), load(same / name)), (folder, name)
    load(folder / "rng-rank0.pt")


@dataclass
class Trial:
    where: str  # the event the kill landed at, or "clock"
    checkpoints: int  # complete checkpoints checked after the kill
    in_checkpoint: bool  # the kill landed while a checkpoint was written or removed
    exact: bool  # the resumed run's losses and weights are bit-identical to the reference's


def pick_event(events: list[str], mode: str, rng: random.Random) -> int:
    """The number of the event to kill at (see the modes above)."""
    renamed = [i for i, e in enumerate(events, 1)
               if e.startswith("rename> ") and e.endswith(".tmp") and f"/{CHECKPOINTS}/" in e]
    if mode == "last-rename":
        return renamed[-1]
    if mode == "rotation":  # the third save is the first that removes one (2 are kept)
        return renamed[2] + 4
    if mode == "final-write":
        return max(i for i, e in enumerate(events, 1) if e.startswith("save_file~ "))
    if mode == "checkpoint":
        return rng.choice([i for i, e in enumerate(events, 1) if f"/{CHECKPOINTS}/" in e])
    return rng.randint(1, len(events))


def check_refusals(settings: dict[str, Any], found: list[Path]) -> None:
    """A killed run is continued only when asked to, and only with the same settings."""
    with pytest.raises(TrainError, match=f"already holds {found[-1].name}; pass --resume"):
        train(build_config(overrides=settings))
    with pytest.raises(TrainError, match=r"--resume: temperature is 0.1 but the checkpoint"):
        train(build_config(overrides={**settings, "resume": True, "temperature": 0.1}))


def kill_and_resume(reference: Reference, base: Path, mode: str, seed: int,
                    refusals: bool = False) -> Trial:
    rng = random.Random(seed)
    out = base / "run"
    base.mkdir(parents=True, exist_ok=True)
    settings = settings_for(reference.suite, out)
    if mode != "any" or rng.random() < 0.5:
        event = pick_event(reference.events, mode, rng)
        log = base / "events.log"
        killed = subprocess.run(command(settings), capture_output=True, text=True, timeout=300,
                                env={**env(), "KILL_AT_EVENT": str(event),
                                     "EVENT_LOG": str(log)}, cwd=REPO)
        assert killed.returncode == -signal.SIGKILL, (seed, event, killed.stderr[-2000:])
        where = log.read_text().splitlines()[-1].split(" ", 1)[1]
    else:
        where = "clock"
        proc = subprocess.Popen(command(settings), env=env(), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 1.05 * reference.wall_s))
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    found = list_checkpoints(out)
    for folder in found:
        check_checkpoint(folder, reference)
    final = out / "model.safetensors"
    if final.exists():  # only ever the whole final model
        assert close(load(final), load(reference.out / "model.safetensors")), (seed, where)

    if refusals:
        check_refusals(settings, found)
    train(build_config(overrides={**settings, "resume": True}))
    assert close(metrics(out), metrics(reference.out)), (seed, where)
    assert [p.name for p in list_checkpoints(out)] == [
        p.name for p in list_checkpoints(reference.out)], (seed, where)
    for folder in list_checkpoints(out):
        check_checkpoint(folder, reference)
    a, b = load(out / "model.safetensors"), load(reference.out / "model.safetensors")
    assert close(a, b), (seed, where)
    assert json.loads((out / "summary.json").read_text())["steps"] == 8
    hidden = [p for p in [*out.glob(".*"), *(out / CHECKPOINTS).glob(".*")]]
    assert not hidden, (seed, where, hidden)
    exact = metrics(out) == metrics(reference.out) and all(torch.equal(a[k], b[k]) for k in a)
    return Trial(where, len(found), f"/{CHECKPOINTS}/" in where, exact)


def run_trials(reference: Reference, base: Path, trials: tuple[tuple[str, int], ...],
               refusals: bool = False) -> list[Trial]:
    done = [kill_and_resume(reference, base / f"trial-{seed}", mode, seed, refusals)
            for mode, seed in trials]
    at_events = [t for t in done if t.where != "clock"]
    print(f"\ntrainer fault suite: {len(done)} SIGKILL trials ({len(at_events)} at a "
          f"file-system event of {len(reference.events)}, "
          f"{sum(t.in_checkpoint for t in done)} of them while a checkpoint was written or "
          f"removed, {sum('~' in t.where for t in done)} inside a file's write; "
          f"{len(done) - len(at_events)} at a moment of a {reference.wall_s:.1f} s run), "
          f"{sum(t.checkpoints for t in done)} checkpoints found after kills, all complete; "
          f"resumed runs equal to the uninterrupted one: {len(done)}, bit-identical: "
          f"{sum(t.exact for t in done)}")
    return done


def test_killed_training_resumes_to_the_uninterrupted_run(reference: Reference,
                                                          tmp_path: Path) -> None:
    trials = run_trials(reference, tmp_path, DEFAULT_TRIALS, refusals=True)
    assert trials[0].in_checkpoint
    assert trials[0].checkpoints  # there was a checkpoint to refuse to overwrite


@pytest.mark.slow
def test_many_killed_trainings_resume_to_the_uninterrupted_run(reference: Reference,
                                                               tmp_path: Path) -> None:
    trials = run_trials(reference, tmp_path, SLOW_TRIALS)
    assert len(trials) == len(SLOW_TRIALS) >= 20
    assert sum(t.in_checkpoint for t in trials) >= 8
