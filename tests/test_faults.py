"""Fault suite: ``mmeb run`` killed with SIGKILL at seeded random moments, then resumed.

After each kill every result file present must be complete and equal to the one an uninterrupted
run writes (timings and date aside); the resumed run must finish with exactly the uninterrupted
run's files and table, and leave no temporary file. Three trials run in the default suite; the
full set of 24 runs with ``pytest -m slow tests/test_faults.py -s`` (it prints its figures).
Also here: the same run twice gives byte-identical results, and the documented behaviour of
constant, all-zero and NaN encoders.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mmeb_fixtures import colour_classification, colour_t2i

import mmeb
from mmeb.errors import ModelError
from mmeb.results import TEMPORARY_GLOB, read_result
from mmeb.tasks import get_task

FAULT_TASKS = ("ImageNet-1K", "MSCOCO_t2i", "HatefulMemes", "VisDial")
DEFAULT_TRIALS = 3
SLOW_TRIALS = 24

SLOW_ENCODER = '''
import os, time
from mmeb.random_encoder import RandomEncoder

class Slow(RandomEncoder):
    """Random vectors, a little slowly, so that kills land inside tasks as well as between."""

    def encode(self, items, *, side, task):
        time.sleep(float(os.environ.get("MMEB_FAULT_SLEEP", "0")))
        return super().encode(items, side=side, task=task)

def build(**kwargs):
    return Slow(**kwargs)
'''


def stable(document: dict) -> str:
    """A result without what legitimately differs between two identical runs."""
    kept = {k: v for k, v in document.items() if k not in ("timings", "date")}
    return json.dumps(kept, sort_keys=True)


@dataclass
class Setup:
    data: Path
    encoder: Path
    reference: dict[str, str]  # file name -> stable text
    table: str
    startup_s: float  # from process start until it holds the results folder's lock
    work_s: float  # from then until it exits
    first_s: float  # from the lock until the first result file exists

    def command(self, out: Path) -> list[str]:
        return [sys.executable, "-m", "mmeb.cli", "run", "--model", f"{self.encoder}:build",
                "--tasks", ",".join(FAULT_TASKS), "--data-dir", str(self.data),
                "--output-dir", str(out), "--batch-size", "2", "--no-progress"]


ENV = {**os.environ, "MMEB_FAULT_SLEEP": "0.015", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    base = tmp_path_factory.mktemp("faults")
    data = base / "data"
    colour_classification(data)
    colour_t2i(data)
    colour_classification(data, get_task("HatefulMemes"), rows=10)
    colour_t2i(data, get_task("VisDial"), rows=8)
    encoder = base / "slow_encoder.py"
    encoder.write_text(textwrap.dedent(SLOW_ENCODER))
    partial = Setup(data, encoder, {}, "", 0.0, 0.0, 0.0)
    out = base / "reference"
    start = time.perf_counter()
    proc = subprocess.Popen(partial.command(out), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    startup = wait_for_lock(out, proc)
    first = wait_for(lambda: any((out / "build").glob("*.json")), proc)
    stdout, stderr = proc.communicate(timeout=300)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, stderr
    folder = out / "build"
    reference = {p.name: stable(read_result(p)) for p in folder.glob("*.json")}
    assert sorted(reference) == sorted(f"{t}.json" for t in FAULT_TASKS)
    return Setup(data, encoder, reference, stdout, startup, wall - startup, first)


def wait_for(condition, proc: subprocess.Popen) -> float:
    """Seconds until ``condition()`` holds (or ``proc`` exits)."""
    start = time.perf_counter()
    while not condition() and proc.poll() is None:
        time.sleep(0.005)
    return time.perf_counter() - start


def wait_for_lock(out: Path, proc: subprocess.Popen) -> float:
    """Seconds until ``proc`` holds the results folder's lock: its work starts then."""
    return wait_for((out / ".build.lock").exists, proc)


@dataclass
class Trial:
    killed_with: int  # result files present when the kill landed
    temporaries: int  # temporary files the kill left behind
    files_checked: int


def kill_and_resume(setup: Setup, out: Path, seed: int) -> Trial:
    rng = random.Random(seed)
    proc = subprocess.Popen(setup.command(out), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    moment = rng.random()
    if moment < 0.1:  # now and then during start-up, before the lock is taken
        time.sleep(rng.uniform(0.0, setup.startup_s))
    else:
        wait_for_lock(out, proc)
        if moment < 0.3:  # reading data, loading the model, the first task
            time.sleep(rng.uniform(0.0, setup.first_s))
        else:  # mostly among the tasks: inside one, between two, while writing, at the end
            time.sleep(rng.uniform(setup.first_s, 1.05 * setup.work_s))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = out / "build"
    checked = 0
    present = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in present:  # whatever the kill left must be complete and correct
        assert stable(read_result(path)) == setup.reference[path.name], (seed, path)
        checked += 1
    temporaries = len(list(folder.glob(TEMPORARY_GLOB))) if folder.is_dir() else 0

    resumed = subprocess.run(setup.command(out), env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, (seed, resumed.stderr)
    assert resumed.stdout == setup.table, seed
    final = {p.name: stable(read_result(p)) for p in folder.glob("*.json")}
    assert final == setup.reference, seed
    checked += len(final)
    assert sorted(p.name for p in folder.iterdir()) == sorted(setup.reference), seed
    return Trial(len(present), temporaries, checked)


def run_trials(setup: Setup, base: Path, seeds: range) -> list[Trial]:
    trials = [kill_and_resume(setup, base / f"trial-{seed}", seed) for seed in seeds]
    partial = sum(0 < t.killed_with < len(FAULT_TASKS) for t in trials)
    print(f"\nfault suite: {len(trials)} SIGKILL trials, {partial} killed between finished "
          f"tasks, {sum(t.killed_with == 0 for t in trials)} before the first result, "
          f"{sum(t.temporaries for t in trials)} temporary files left by kills and removed, "
          f"{sum(t.files_checked for t in trials)} result files checked, 0 lost or corrupt "
          f"(uninterrupted run: {setup.startup_s:.1f} s start-up, {setup.work_s:.1f} s work)")
    return trials


def test_killed_runs_resume_to_the_uninterrupted_result(setup, tmp_path):
    trials = run_trials(setup, tmp_path, range(DEFAULT_TRIALS))
    assert len(trials) == DEFAULT_TRIALS


@pytest.mark.slow
def test_many_killed_runs_resume_to_the_uninterrupted_result(setup, tmp_path):
    trials = run_trials(setup, tmp_path, range(100, 100 + SLOW_TRIALS))
    assert len(trials) == SLOW_TRIALS
    # The seeded delays spread over the whole run: some kills land between finished tasks.
    assert any(0 < t.killed_with < len(FAULT_TASKS) for t in trials)


# --- determinism and documented degenerate encoders -----------------------------------------


class Constant:
    name = "constant"

    def __init__(self, value: float) -> None:
        self.value = value

    def encode(self, items, *, side, task):
        return np.full((len(items), 4), self.value)


def test_the_same_run_twice_gives_byte_identical_results(setup, tmp_path):
    from mmeb.random_encoder import RandomEncoder

    texts = []
    for name in ("a", "b"):
        mmeb.evaluate(RandomEncoder(dim=32), tasks=list(FAULT_TASKS), output_dir=tmp_path / name,
                      data_dir=str(setup.data), progress=False)
        files = sorted((tmp_path / name / "random").glob("*.json"))
        texts.append([stable(json.loads(p.read_bytes())) for p in files])
        metrics = [json.dumps(json.loads(p.read_bytes())["metrics"]) for p in files]
        texts.append(metrics)
    assert len(texts[0]) == len(FAULT_TASKS)
    assert texts[0] == texts[2]
    assert texts[1] == texts[3]


def test_a_constant_encoder_scores_chance_and_is_warned_about(setup, tmp_path):
    outcome = mmeb.evaluate(Constant(1.0), tasks=["ImageNet-1K"], output_dir=tmp_path,
                            data_dir=str(setup.data), progress=False)
    doc = outcome.results[0]
    assert doc["metrics"]["hit@1"] == pytest.approx(doc["chance"]) == pytest.approx(1 / 8)
    assert any("at chance level" in w for w in doc["warnings"])


@pytest.mark.parametrize(("value", "message"), [(0.0, "all-zero"), (np.nan, "NaN")])
def test_all_zero_and_nan_encoders_are_refused_and_write_nothing(setup, tmp_path, value,
                                                                 message):
    with pytest.raises(ModelError, match=message):
        mmeb.evaluate(Constant(value), tasks=["ImageNet-1K"], output_dir=tmp_path,
                      data_dir=str(setup.data), progress=False)
    assert not list(tmp_path.rglob("*.json"))
