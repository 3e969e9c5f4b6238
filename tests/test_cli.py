"""The command line end to end on MMEB-format fixtures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mmeb_fixtures import TASKS, invoke, run_args, two_task_data


@pytest.fixture
def data_dir(tmp_path):
    return two_task_data(tmp_path / "data")


def test_run_writes_one_result_per_task_and_prints_the_summary(data_dir, tmp_path):
    out = tmp_path / "results"
    result = invoke(*run_args(data_dir, out, "--model", "random", "--model-arg", "dim=16"))
    assert result.exit_code == 0, result.output
    assert "hit@1 (%)" in result.output
    assert "| overall (36)" in result.output
    assert "random (incomplete: 2/36)" in result.output
    assert "[0.0, 50.0]" in result.output
    # The random baseline is meant to score chance: one summary line, no warning per task.
    assert re.search(r"random: at chance level on [12] of 2 tasks, as a random baseline",
                     result.output)
    assert "warning:" not in result.output
    files = sorted(p.name for p in (out / "random").glob("*.json"))
    assert files == ["ImageNet-1K.json", "MSCOCO_t2i.json"]
    doc = json.loads((out / "random" / "ImageNet-1K.json").read_text())
    assert doc["main_metric"] == "hit@1"
    assert doc["main_score"] == doc["metrics"]["hit@1"]
    assert set(doc["metrics"]) == {"hit@1", "hit@5", "hit@10", "mrr", "ndcg@5", "ndcg@10"}
    assert doc["counts"]["rows"] == 12
    assert doc["counts"]["unique_candidates"] == 8
    assert doc["config"]["adapter"] == {"name": "random", "dim": 16, "seed": 0}
    assert doc["config"]["scoring"]["tie_policy"] == "expected"
    assert doc["config"]["batch_size"] == 32
    assert doc["versions"]["mmeb"]
    assert doc["dataset"]["kind"] == "local"
    assert {"load_s", "encode_queries_s", "encode_targets_s", "score_s"} <= set(doc["timings"])
    assert doc["meta_task"] == "classification"
    assert doc["role"] == "IND"


def test_rerun_skips_finished_tasks_and_overwrite_redoes_them(data_dir, tmp_path):
    out = tmp_path / "results"
    one = ["run", "--tasks", "ImageNet-1K", "--data-dir", str(data_dir), "--output-dir",
           str(out), "--no-progress", "--model", "random"]
    assert invoke(*one).exit_code == 0
    mtime = (out / "random" / "ImageNet-1K.json").stat().st_mtime_ns
    # Adding a task to the run computes only that one; the finished one is reused as it is.
    first = invoke(*run_args(data_dir, out, "--model", "random"))
    assert first.exit_code == 0
    assert "ImageNet-1K: done earlier" in first.output
    assert "MSCOCO_t2i: hit@1" in first.output
    assert (out / "random" / "ImageNet-1K.json").stat().st_mtime_ns == mtime
    again = invoke(*run_args(data_dir, out, "--model", "random"))
    assert again.exit_code == 0
    assert "MSCOCO_t2i: done earlier" in again.output
    assert (out / "random" / "ImageNet-1K.json").stat().st_mtime_ns == mtime
    assert again.stdout == first.stdout
    invoke(*run_args(data_dir, out, "--model", "random", "--overwrite"))
    assert (out / "random" / "ImageNet-1K.json").stat().st_mtime_ns != mtime


def test_rerun_with_other_settings_is_refused(data_dir, tmp_path):
    out = tmp_path / "results"
    invoke(*run_args(data_dir, out, "--model", "random"))
    result = invoke(*run_args(data_dir, out, "--model", "random", "--limit", "3"))
    assert result.exit_code == 1
    assert "computed with other settings (limit: None -> 3)" in result.output
    assert "--overwrite" in result.output


ENCODER_FILE = '''
import os, time
import numpy as np
from mmeb.random_encoder import RandomEncoder

class SlowOnCaptions(RandomEncoder):
    def encode(self, items, *, side, task):
        log = os.environ.get("MMEB_TEST_CALLS")
        if log:
            with open(log, "a") as f:
                f.write(f"{task.name} {side} {len(items)}\\n")
        if task.name == "MSCOCO_t2i" and os.environ.get("MMEB_TEST_HANG"):
            time.sleep(60)
        return super().encode(items, side=side, task=task)

def build(**kwargs):
    return SlowOnCaptions(**kwargs)
'''


def test_killed_run_keeps_finished_tasks_and_resumes(data_dir, tmp_path):
    encoder_file = tmp_path / "my_encoder.py"
    encoder_file.write_text(textwrap.dedent(ENCODER_FILE))
    out = tmp_path / "results"

    def command(folder: Path) -> list[str]:
        model = f"{encoder_file}:build"
        return [sys.executable, "-m", "mmeb.cli", *run_args(data_dir, folder, "--model", model)]

    args = command(out)
    env = {**os.environ, "MMEB_TEST_HANG": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = out / "build" / "ImageNet-1K.json"
    deadline = time.time() + 60
    while not done.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert done.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in (out / "build").iterdir()) == ["ImageNet-1K.json"]

    calls = tmp_path / "calls.txt"
    env = {**os.environ, "MMEB_TEST_CALLS": str(calls)}
    resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert {line.split()[0] for line in calls.read_text().splitlines()} == {"MSCOCO_t2i"}

    fresh = subprocess.run(command(tmp_path / "fresh"), capture_output=True, text=True,
                           timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert resumed.stdout == fresh.stdout


def test_third_party_encoder_from_a_module_path(data_dir, tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "third_party_enc.py").write_text(textwrap.dedent(ENCODER_FILE))
    monkeypatch.syspath_prepend(str(package))
    result = invoke(*run_args(data_dir, tmp_path / "r", "--model", "third_party_enc:build"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "build" / "MSCOCO_t2i.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'; registered models: blip, blip2, clip"),
        (["--model", "random", "--tasks", "ImageNet"], "unknown task 'ImageNet'; valid tasks:"),
        (["--model", "random", "--tasks", " "], "--tasks names no task"),
        (["--model", "random", "--checkpoint", "x"], "does not take --checkpoint"),
        (["--model", "random", "--model-arg", "dims"], "--model-arg 'dims' is not key=value"),
        (["--model", "missing_file.py:build"], "model file not found: missing_file.py"),
    ],
)
def test_bad_options_are_one_line_errors(data_dir, tmp_path, args, message):
    tasks = [] if "--tasks" in args else ["--tasks", TASKS]
    result = invoke("run", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "r"),
                    *tasks, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list((tmp_path / "r").rglob("*.json"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def build(:\n    pass\n", "broken_enc.py:1: invalid syntax; fix the model file"),
        ("import no_such_package_xyz\n", "imports 'no_such_package_xyz', which is not installed"),
    ],
)
def test_a_model_file_that_cannot_be_imported_is_a_one_line_error(
        data_dir, tmp_path, source, message):
    model_file = tmp_path / "broken_enc.py"
    model_file.write_text(source)
    result = invoke(*run_args(data_dir, tmp_path / "r", "--model", f"{model_file}:build"))
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not [m for m in sys.modules if m.startswith("mmeb_user_model_")
                and getattr(sys.modules[m], "__file__", None) == str(model_file)]


def test_unwritable_output_dir_is_a_one_line_error(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke(*run_args(data_dir, blocker / "sub", "--model", "random"))
    assert result.exit_code == 1
    assert "cannot write results to" in result.output
    assert "--output-dir" in result.output


def test_missing_image_fails_without_partial_results(data_dir, tmp_path):
    (data_dir / "eval_images" / "MSCOCO_t2i" / "red.jpg").unlink()
    out = tmp_path / "results"
    result = invoke(*run_args(data_dir, out, "--model", "random"))
    assert result.exit_code == 1
    assert "MSCOCO_t2i row 0 candidate 0: image not found" in result.output
    # the task before it finished and was kept; the broken one left nothing behind
    assert sorted(p.name for p in (out / "random").iterdir()) == ["ImageNet-1K.json"]


def test_tasks_json_lists_required_fields():
    result = invoke("tasks", "--split", "ood", "--format", "json")
    records = json.loads(result.output)
    assert len(records) == 16
    required = {"name", "meta_task", "role", "query_modality", "target_modality",
                "query_instruction", "target_instruction", "num_candidates"}
    assert all(required <= set(r) for r in records)
    assert {r["role"] for r in records} == {"OOD"}


def test_tasks_table_and_models_list():
    table = invoke("tasks", "--meta-task", "grounding")
    assert table.exit_code == 0
    assert "RefCOCO-Matching" in table.output
    assert "ImageNet-1K" not in table.output
    models = invoke("models")
    assert models.exit_code == 0
    assert "random" in models.output


def test_summary_command_reads_a_result_folder(data_dir, tmp_path):
    out = tmp_path / "results"
    run = invoke(*run_args(data_dir, out, "--model", "random"))
    summary = invoke("summary", str(out / "random"))
    assert summary.exit_code == 0
    assert summary.output == run.stdout


def test_download_without_network_is_a_one_line_error():
    result = invoke("download", "--tasks", "CIRR")
    assert result.exit_code == 1
    assert "run `mmeb download` where the Hub is reachable" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_sample_with_another_seed_needs_an_output_folder():
    result = invoke("sample", "--seed", "3")
    assert result.exit_code == 1
    assert "pass --out DIR with --seed" in result.output
