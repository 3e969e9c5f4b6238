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
        calls = os.environ.get("MMEB_FAULT_CALLS")
        if calls:  # one line per call: a run that should encode nothing leaves this empty
            with open(calls, "a") as handle:
                handle.write(f"{task.name} {side} {len(items)}\\n")
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


# --- the embedding cache under SIGKILL ------------------------------------------------------
#
# The same four tasks with ``--cache-dir``. Half the kills land at a seeded wall-clock moment,
# half at a seeded file-system event (tests/kill_at_event.py), so that some fall between a
# segment's vectors and its index, or between a task's query and target segments. After each
# kill every index in the cache must parse and its vectors must be complete, match the recorded
# checksum and equal the uninterrupted run's vector for each key; the resumed run must report no
# corrupt entry, write the uninterrupted run's files, and leave no temporary file in the cache;
# a run into a fresh results folder must then encode nothing and write the same files again.

CACHE_DEFAULT_TRIALS = 2
CACHE_SLOW_TRIALS = 24
KILLER = Path(__file__).with_name("kill_at_event.py")


def cache_command(setup: Setup, out: Path, cache: Path, *, at_event: bool = False
                  ) -> list[str]:
    command = [*setup.command(out), "--cache-dir", str(cache)]
    if at_event:  # the same command, run through the event killer
        command = [sys.executable, str(KILLER), "mmeb.cli", *command[3:]]
    return command


def cache_vectors(cache: Path) -> tuple[dict[str, np.ndarray], int]:
    """Every cached vector by key, each segment checked complete; and the orphan ``.npy``
    files (vectors whose index was never written: absent entries, never read)."""
    import hashlib
    import io

    vectors: dict[str, np.ndarray] = {}
    orphans = 0
    for folder in (p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []:
        for index in folder.glob("*.json"):
            if index.name == "model.json":
                json.loads(index.read_text())  # complete, or absent
                continue
            meta = json.loads(index.read_text())
            data = index.with_suffix(".npy").read_bytes()  # an index never lacks its vectors
            assert hashlib.sha256(data).hexdigest() == meta["sha256"], index
            rows = np.load(io.BytesIO(data), allow_pickle=False)
            assert rows.shape == (len(meta["keys"]), meta["dim"]), index
            vectors.update(zip(meta["keys"], rows, strict=True))
        orphans += sum(not p.with_suffix(".json").exists() for p in folder.glob("*.npy"))
    return vectors, orphans


def cache_temporaries(cache: Path) -> int:
    return len(list(cache.glob(f"*/{TEMPORARY_GLOB}"))) if cache.is_dir() else 0


@dataclass
class CacheSetup:
    events: list[str]  # the uninterrupted run's file-system events, in order
    vectors: dict[str, np.ndarray]  # its cache, by key


@pytest.fixture(scope="module")
def cache_setup(setup: Setup, tmp_path_factory) -> CacheSetup:
    base = tmp_path_factory.mktemp("faults-cache")
    log, calls = base / "events.log", base / "calls.log"
    env = {**ENV, "EVENT_LOG": str(log), "MMEB_FAULT_CALLS": str(calls)}
    done = subprocess.run(cache_command(setup, base / "out", base / "cache", at_event=True),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == setup.table
    assert {p.name: stable(read_result(p)) for p in (base / "out" / "build").glob("*.json")
            } == setup.reference
    vectors, orphans = cache_vectors(base / "cache")
    assert orphans == 0
    # Each task's two sides, one segment each, hold every vector the run encoded.
    encoded = sum(int(line.split()[-1]) for line in calls.read_text().splitlines())
    assert len(vectors) == encoded
    events = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    return CacheSetup(events, vectors)


@dataclass
class CacheTrial:
    kind: str  # "event: <call> <path>" or "clock"
    vectors: int  # complete entries present after the kill
    orphans: int  # vector files without an index after the kill (absent entries)
    temporaries: int  # both removed by the resumed run
    results: int


def kill_with_cache(setup: Setup, cache_setup: CacheSetup, base: Path, seed: int) -> CacheTrial:
    rng = random.Random(seed)
    out, cache, calls = base / "out", base / "cache", base / "calls.log"
    base.mkdir(parents=True, exist_ok=True)
    if rng.random() < 0.5:
        event = rng.randint(1, len(cache_setup.events))
        log = base / "events.log"
        killed = subprocess.run(cache_command(setup, out, cache, at_event=True),
                                env={**ENV, "KILL_AT_EVENT": str(event), "EVENT_LOG": str(log)},
                                capture_output=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, (seed, event, killed.stderr)
        kind = "event: " + log.read_text().splitlines()[-1].split(" ", 1)[1]
    else:
        kind = "clock"
        proc = subprocess.Popen(cache_command(setup, out, cache), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_lock(out, proc)
        time.sleep(rng.uniform(0.0, 1.05 * setup.work_s))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    vectors, orphans = cache_vectors(cache)
    for key, vector in vectors.items():  # what the kill left is what an unbroken run stores
        assert np.array_equal(vector, cache_setup.vectors[key]), (seed, kind, key)
    temporaries = cache_temporaries(cache)
    present = sorted((out / "build").glob("*.json")) if (out / "build").is_dir() else []
    for path in present:
        assert stable(read_result(path)) == setup.reference[path.name], (seed, kind, path)

    resumed = subprocess.run(cache_command(setup, out, cache), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, (seed, kind, resumed.stderr)
    for warning in ("is corrupt", "unreadable index"):  # nothing torn was ever met
        assert warning not in resumed.stderr, (seed, kind, resumed.stderr)
    removed = resumed.stderr.count("left by a stopped run")
    assert removed == orphans + temporaries, (seed, kind, resumed.stderr)
    assert resumed.stdout == setup.table, (seed, kind)
    final = {p.name: stable(read_result(p)) for p in (out / "build").glob("*.json")}
    assert final == setup.reference, (seed, kind)
    after, _ = cache_vectors(cache)
    assert after.keys() == cache_setup.vectors.keys(), (seed, kind)
    assert cache_temporaries(cache) == 0, (seed, kind)

    # Everything is cached now: a run into a fresh results folder encodes nothing.
    again = subprocess.run(cache_command(setup, base / "again", cache), capture_output=True,
                           env={**ENV, "MMEB_FAULT_CALLS": str(calls)}, text=True, timeout=300)
    assert again.returncode == 0, (seed, kind, again.stderr)
    assert not calls.exists(), (seed, kind, calls.read_text())
    assert {p.name: stable(read_result(p)) for p in (base / "again" / "build").glob("*.json")
            } == setup.reference, (seed, kind)
    return CacheTrial(kind, len(vectors), orphans, temporaries,
                      len(present) + 2 * len(setup.reference))


def run_cache_trials(setup: Setup, cache_setup: CacheSetup, base: Path, seeds: range
                     ) -> list[CacheTrial]:
    trials = [kill_with_cache(setup, cache_setup, base / f"trial-{seed}", seed) for seed in seeds]
    at_events = [t for t in trials if t.kind != "clock"]
    between = sum(t.orphans > 0 for t in trials)
    print(f"\ncache fault suite: {len(trials)} SIGKILL trials ({len(at_events)} at a "
          f"file-system event of {len(cache_setup.events)}, "
          f"{len(trials) - len(at_events)} at a moment; {between} between a segment's vectors "
          "and its index), "
          f"{sum(t.vectors for t in trials)} cached vectors checked after kills, "
          f"{sum(t.orphans for t in trials)} index-less vector files and "
          f"{sum(t.temporaries for t in trials)} temporaries left by kills (never read, all "
          "removed on resume), "
          f"{sum(t.results for t in trials)} result files checked, 0 corrupt entries read, "
          "0 encoder calls after completion")
    return trials


def test_killed_runs_with_a_cache_never_read_a_torn_entry(setup, cache_setup, tmp_path):
    trials = run_cache_trials(setup, cache_setup, tmp_path, range(CACHE_DEFAULT_TRIALS))
    assert len(trials) == CACHE_DEFAULT_TRIALS


@pytest.mark.slow
def test_many_killed_runs_with_a_cache_never_read_a_torn_entry(setup, cache_setup, tmp_path):
    trials = run_cache_trials(setup, cache_setup, tmp_path,
                              range(200, 200 + CACHE_SLOW_TRIALS))
    assert len(trials) == CACHE_SLOW_TRIALS
    assert sum(t.kind != "clock" for t in trials) >= CACHE_SLOW_TRIALS // 4
