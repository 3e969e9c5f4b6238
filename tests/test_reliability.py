"""No stale or double-counted number, and every bad input a one-line error before computing.

Each test names the defect it guards against; docs/RELIABILITY.md lists them as a matrix.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mmeb_fixtures import (
    RGB,
    class_row,
    colour_classification,
    colour_t2i,
    invoke,
    run_args,
    two_task_data,
    write_image,
    write_rows,
)

import mmeb
from mmeb.engine import evaluate_task
from mmeb.errors import DataError, ModelError, ResultsError
from mmeb.metrics import near_chance
from mmeb.random_encoder import RandomEncoder
from mmeb.results import summarize
from mmeb.runner import RunConfig, folder_lock, run
from mmeb.tasks import get_task


@pytest.fixture
def data_dir(tmp_path):
    return two_task_data(tmp_path / "data")


def one_line_error(result, *fragments: str) -> str:
    """The run failed with exactly one ``error:`` line containing every fragment."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# An encoder file whose factory and calls leave traces, to tell what ran and when.
TRACED_ENCODER = '''
import os
from mmeb.random_encoder import RandomEncoder

DIM = {dim}

def build(**kwargs):
    if os.environ.get("MMEB_TEST_BUILT"):
        open(os.environ["MMEB_TEST_BUILT"], "a").write("built\\n")
    kwargs.setdefault("dim", int(os.environ.get("MMEB_TEST_DIM", DIM)))
    return RandomEncoder(**kwargs)
'''


def encoder_file(folder: Path, dim: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "enc.py"
    path.write_text(textwrap.dedent(TRACED_ENCODER.format(dim=dim)))
    return path


class Colours:
    """A perfect encoder for the colour fixtures: image pixel or colour word -> one-hot."""

    name = "colours"
    WORDS = tuple(RGB)

    def encode(self, items, *, side, task):
        out = []
        for item in items:
            if item.has_image:
                pixel = item.image.getpixel((4, 4))
                word = min(RGB, key=lambda c: sum((a - b) ** 2
                                                  for a, b in zip(RGB[c], pixel, strict=True)))
            else:
                word = next(c for c in self.WORDS if c in item.text)
            out.append(np.eye(len(self.WORDS))[self.WORDS.index(word)])
        return np.array(out)


# --- stale results -------------------------------------------------------------------------


def test_changed_data_is_not_reused(data_dir, tmp_path):
    out = tmp_path / "results"
    assert invoke(*run_args(data_dir, out, "--model", "random")).exit_code == 0
    colour_classification(data_dir, rows=10)  # the same task, other rows
    one_line_error(invoke(*run_args(data_dir, out, "--model", "random")),
                   "ImageNet-1K.json was computed with other settings (data_sha256:",
                   "--overwrite", "--output-dir / --name")
    assert invoke(*run_args(data_dir, out, "--model", "random", "--overwrite")).exit_code == 0


def test_changed_encoder_config_is_not_reused_from_python(data_dir, tmp_path):
    options = {"tasks": ["ImageNet-1K"], "output_dir": tmp_path / "r",
               "data_dir": str(data_dir), "progress": False}
    mmeb.evaluate(RandomEncoder(dim=16), **options)
    with pytest.raises(ResultsError, match=r"other settings \(encoder_config: .*'dim': 16.*"
                                           r"'dim': 32.*--overwrite"):
        mmeb.evaluate(RandomEncoder(dim=32), **options)
    assert mmeb.evaluate(RandomEncoder(dim=16), **options).skipped == ["ImageNet-1K"]


def test_changed_encoder_config_is_caught_once_the_model_loads(data_dir, tmp_path, monkeypatch):
    """The CLI loads the model only when a task needs computing; then reused results are
    checked against its config too."""
    model = f"{encoder_file(tmp_path / 'm')}:build"
    out = tmp_path / "results"
    monkeypatch.setenv("MMEB_TEST_DIM", "16")
    assert invoke(*run_args(data_dir, out, "--model", model, tasks="ImageNet-1K")).exit_code == 0
    monkeypatch.setenv("MMEB_TEST_DIM", "24")
    one_line_error(invoke(*run_args(data_dir, out, "--model", model)),
                   "ImageNet-1K.json was computed with other settings (encoder_config:")
    assert not (out / "build" / "MSCOCO_t2i.json").exists()


def test_the_same_relative_model_file_elsewhere_is_another_model(data_dir, tmp_path, monkeypatch):
    encoder_file(tmp_path / "a", dim=16)
    encoder_file(tmp_path / "b", dim=32)
    out = tmp_path / "results"
    monkeypatch.chdir(tmp_path / "a")
    assert invoke(*run_args(data_dir, out, "--model", "enc.py:build")).exit_code == 0
    monkeypatch.chdir(tmp_path / "b")
    one_line_error(invoke(*run_args(data_dir, out, "--model", "enc.py:build")),
                   "other settings (model:", str(tmp_path / "a" / "enc.py"),
                   str(tmp_path / "b" / "enc.py"))


def test_a_model_file_edited_in_place_is_another_model(data_dir, tmp_path):
    path = encoder_file(tmp_path / "m", dim=16)
    out = tmp_path / "results"
    assert invoke(*run_args(data_dir, out, "--model", f"{path}:build")).exit_code == 0
    path.write_text(path.read_text().replace("DIM = 16", "DIM = 8"))
    one_line_error(invoke(*run_args(data_dir, out, "--model", f"{path}:build")),
                   "other settings (model_sha256:")


# --- double counting ------------------------------------------------------------------------


def test_a_task_listed_twice_runs_and_counts_once(data_dir, tmp_path):
    out = tmp_path / "results"
    result = invoke(*run_args(data_dir, out, "--model", "random",
                              tasks="ImageNet-1K,MSCOCO_t2i,ImageNet-1K"))
    assert result.exit_code == 0, result.output
    assert "(2 of 36;" in result.stdout  # the aggregates count each task once
    assert result.stdout.count("\n| ImageNet-1K ") == 1
    assert result.output.count("ImageNet-1K: hit@1 25.0% ->") == 1


def test_a_copied_result_file_is_refused_by_summary(data_dir, tmp_path):
    out = tmp_path / "results"
    assert invoke(*run_args(data_dir, out, "--model", "random")).exit_code == 0
    shutil.copy(out / "random" / "ImageNet-1K.json", out / "random" / "ImageNet-1K (copy).json")
    line = one_line_error(invoke("summary", str(out / "random")),
                          "ImageNet-1K (copy).json", "ImageNet-1K.json",
                          "two results for task ImageNet-1K")
    assert "--overwrite" not in line


def test_summarize_and_run_refuse_a_task_twice(data_dir, tmp_path):
    doc = {"task": "ImageNet-1K", "meta_task": "classification", "role": "IND",
           "metrics": {"hit@1": 0.5}}
    with pytest.raises(ResultsError, match="two results for task ImageNet-1K"):
        summarize([doc, {**doc, "metrics": {"hit@1": 0.9}}])
    task = get_task("ImageNet-1K")
    config = RunConfig(model="random", data_dir=str(data_dir), output_dir=tmp_path / "r",
                       progress=False)
    with pytest.raises(ResultsError, match="ImageNet-1K is listed twice"):
        run(config, [task, task], encoder=RandomEncoder())


# --- concurrent runs ------------------------------------------------------------------------


def test_a_locked_results_folder_fails_fast(data_dir, tmp_path):
    out = tmp_path / "results"
    (out / "random").mkdir(parents=True)
    with folder_lock(out / "random"):
        one_line_error(invoke(*run_args(data_dir, out, "--model", "random")),
                       f"{out / 'random'} is in use by another mmeb run (pid {os.getpid()})",
                       "--output-dir / --name")
    assert not list((out / "random").iterdir())
    assert invoke(*run_args(data_dir, out, "--model", "random")).exit_code == 0


HANGING_ENCODER = '''
import os, time
from mmeb.random_encoder import RandomEncoder

class Hangs(RandomEncoder):
    def encode(self, items, *, side, task):
        if task.name == "MSCOCO_t2i":
            time.sleep(60)
        return super().encode(items, side=side, task=task)

def build(**kwargs):
    return Hangs(**kwargs)
'''


def test_a_concurrent_run_with_other_settings_cannot_write(data_dir, tmp_path):
    (tmp_path / "hang.py").write_text(textwrap.dedent(HANGING_ENCODER))
    out = tmp_path / "results"
    args = [sys.executable, "-m", "mmeb.cli",
            *run_args(data_dir, out, "--model", f"{tmp_path / 'hang.py'}:build")]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = out / "build" / "ImageNet-1K.json"
    try:
        deadline = time.time() + 60
        while not done.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert done.exists(), first.stderr.read().decode() if first.stderr else ""
        before = done.read_bytes()
        second = invoke(*run_args(data_dir, out, "--model", f"{tmp_path / 'hang.py'}:build",
                                  "--limit", "3", "--overwrite"))
        one_line_error(second, f"is in use by another mmeb run (pid {first.pid})")
        assert done.read_bytes() == before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The killed holder's lock is free at once; the settings check then speaks.
    third = invoke(*run_args(data_dir, out, "--model", f"{tmp_path / 'hang.py'}:build",
                             "--limit", "3", "--tasks", "ImageNet-1K"))
    one_line_error(third, "computed with other settings (limit: None -> 3)")


# --- image identity -------------------------------------------------------------------------


def test_a_copy_of_the_gold_spelled_differently_is_the_gold(tmp_path):
    task = colour_t2i(tmp_path)
    rows = pq.read_table(tmp_path / task.name / "test-00000-of-00001.parquet").to_pylist()
    for row in rows:
        gold = row["tgt_img_path"][0]
        folder, name = gold.split("/")
        row["tgt_img_path"] = [gold, f"{folder}/./{name}", f"{folder}//{name}",
                               *row["tgt_img_path"][1:]]
        row["tgt_text"] = row["tgt_text"][:1] * 2 + row["tgt_text"]
    write_rows(tmp_path, task.name, rows)
    result = evaluate_task(Colours(), task, data_dir=str(tmp_path), progress=False)
    assert result.metrics["hit@1"] == pytest.approx(1.0)
    assert result.counts["duplicate_candidates_dropped"] == 2 * len(rows)
    assert result.counts["unique_candidates"] == 8


# --- degenerate vectors ---------------------------------------------------------------------


def _returns(make):
    class Encoder:
        name = "degenerate"

        def encode(self, items, *, side, task):
            return make(items, side)

    return Encoder()


def _zero_for_green(items, side):
    out = np.ones((len(items), 4))
    out[:, 0] = np.arange(len(items))
    for i, item in enumerate(items):
        if side == "target" and item.text == "green":
            out[i] = 0.0
    return out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_zero_for_green, r"all-zero .* for 1 target item\(s\) of ImageNet-1K "
                          r"\(first: ImageNet-1K row 0 candidate 1\)"),
        (lambda items, side: np.zeros((len(items), 0)), r"zero-width \(d=0\) vectors"),
        (lambda items, side: np.full((len(items), 4), 1e300),
         r"norm overflows float64 for \d+ query item\(s\) of ImageNet-1K \(first: ImageNet-1K "
         r"row 0 query\)"),
        (lambda items, side: np.where(np.arange(len(items))[:, None] == 2, np.nan,
                                      np.ones((len(items), 3))),
         r"NaN or infinite values for 1 query item\(s\) of ImageNet-1K \(first: ImageNet-1K "
         r"row 2 query\)"),
        (lambda items, side: [[1.0, 2.0]] + [[1.0]] * (len(items) - 1),
         r"returned list that is not an \(n, d\) array"),
        (lambda items, side: None, r"returned shape \(\) for 12 query items"),
        (lambda items, side: ["a"] * len(items), r"returned list that is not an \(n, d\)"),
    ],
)
def test_degenerate_vectors_are_refused(tmp_path, make, message):
    task = colour_classification(tmp_path)
    with pytest.raises(ModelError, match=message):
        evaluate_task(_returns(make), task, data_dir=str(tmp_path), progress=False)


def test_all_zero_targets_fail_the_run_without_a_result(data_dir, tmp_path):
    (tmp_path / "zero.py").write_text(textwrap.dedent('''
        import numpy as np
        class Zero:
            name = "zero"
            def encode(self, items, *, side, task):
                out = np.ones((len(items), 3))
                if side == "target":
                    out[::3] = 0.0
                return out
        def build():
            return Zero()
    '''))
    out = tmp_path / "results"
    one_line_error(invoke(*run_args(data_dir, out, "--model", f"{tmp_path / 'zero.py'}:build")),
                   "all-zero", "ImageNet-1K row 0 candidate 0")
    assert not list(out.rglob("*.json"))


# --- empty inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([class_row(), class_row(qry_text="", qry_img_path="")],
         r"ImageNet-1K row 1 query: empty input \(no text and no image"),
        ([class_row(qry_text=None, qry_img_path=None)], "row 0 query: empty input"),
        ([class_row(qry_img_path="")], "row 0 query: empty input"),  # instruction only
        ([class_row(tgt_text=["red", ""])], "row 0 candidate 1: empty input"),
        ([class_row(tgt_text=["", "blue"], tgt_img_path=[None, ""])],
         "row 0 candidate 0: empty input"),  # the gold itself is missing
    ],
)
def test_empty_inputs_are_refused_before_encoding(tmp_path, rows, message):
    from mmeb.data import load_task_inputs

    task = get_task("ImageNet-1K")
    write_image(tmp_path, "ImageNet-1K/a.jpg", "red")
    write_rows(tmp_path, task.name, rows)
    with pytest.raises(DataError, match=message):
        load_task_inputs(task, data_dir=tmp_path)


# --- chance warning -------------------------------------------------------------------------


def test_a_perfect_encoder_on_a_tiny_sample_is_not_called_chance(tmp_path):
    task = get_task("ImageNet-1K")
    rows = []
    for i, colour in enumerate(("red", "blue", "green", "white")):
        write_image(tmp_path, f"ImageNet-1K/{i}.jpg", colour)
        other = "black" if colour != "black" else "red"
        rows.append(class_row(qry_img_path=f"ImageNet-1K/{i}.jpg", tgt_text=[colour, other]))
    write_rows(tmp_path, task.name, rows)
    result = evaluate_task(Colours(), task, data_dir=str(tmp_path), limit=2, progress=False)
    assert result.metrics["hit@1"] == 1.0
    assert result.chance == 0.5
    assert result.warnings == []


def test_near_chance_needs_a_sample_that_can_tell():
    assert not near_chance(1.0, 0.5, 2)  # a perfect score on 2 rows is no evidence either way
    assert not near_chance(0.0, 0.125, 5)  # too few rows
    assert near_chance(0.25, 0.125, 12)
    assert near_chance(0.5, 0.5, 400)
    assert not near_chance(0.9, 0.5, 400)


# --- one-line errors instead of tracebacks ---------------------------------------------------


def test_a_damaged_data_page_behind_a_valid_footer_is_one_line(data_dir, tmp_path):
    path = data_dir / "ImageNet-1K" / "test-00000-of-00001.parquet"
    damaged = bytearray(path.read_bytes())
    damaged[4:20] = b"\xff" * 16  # the first page header; the footer stays intact
    path.write_bytes(bytes(damaged))
    assert pq.ParquetFile(path).metadata.num_rows == 12
    one_line_error(invoke(*run_args(data_dir, tmp_path / "r", "--model", "random")),
                   f"ImageNet-1K: cannot read the rows of {path}", "re-download it")


def test_invalid_utf8_in_a_text_column_is_one_line(tmp_path):
    task = get_task("ImageNet-1K")
    data = b"red\xffblue"
    offsets = pa.array([0, 3, 8], type=pa.int32()).buffers()[1]
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(data)])
    table = pa.table({
        "qry_text": bad, "qry_img_path": pa.array(["", ""]),
        "tgt_text": pa.array([["a"], ["b"]]), "tgt_img_path": pa.array([[""], [""]]),
    })
    (tmp_path / task.name).mkdir()
    pq.write_table(table, tmp_path / task.name / "test-00000-of-00001.parquet")
    result = invoke("run", "--model", "random", "--tasks", task.name, "--data-dir",
                    str(tmp_path), "--output-dir", str(tmp_path / "r"))
    one_line_error(result, "column 'qry_text' is not valid UTF-8", "re-encode")


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("dim=abc", "--model-arg dim='abc' is str, but model 'random' takes dim: int"),
        ("dim=1.5", "--model-arg dim=1.5 is float"),
        ("seed=true", "--model-arg seed=True is bool"),
    ],
)
def test_a_bad_model_arg_value_is_one_line(data_dir, tmp_path, arg, message):
    one_line_error(invoke(*run_args(data_dir, tmp_path / "r", "--model", "random",
                                    "--model-arg", arg)), message)


def test_a_number_for_a_string_option_is_passed_as_typed(tmp_path):
    from mmeb.registry import load_model

    (tmp_path / "named.py").write_text(textwrap.dedent('''
        from mmeb.random_encoder import RandomEncoder
        def build(revision: str = "main", dim: int = 8):
            encoder = RandomEncoder(dim=dim)
            encoder.config["revision"] = revision
            return encoder
    '''))
    encoder = load_model(f"{tmp_path / 'named.py'}:build",
                         model_args={"revision": 2024, "dim": 4})
    assert encoder.config == {"dim": 4, "seed": 0, "revision": "2024"}


def test_a_factory_refusing_a_value_is_one_line(data_dir, tmp_path):
    (tmp_path / "strict.py").write_text(textwrap.dedent('''
        from mmeb.random_encoder import RandomEncoder
        def build(dim):
            if dim < 1:
                raise ValueError("dim must be positive")
            return RandomEncoder(dim=dim)
    '''))
    one_line_error(invoke(*run_args(data_dir, tmp_path / "r", "--model",
                                    f"{tmp_path / 'strict.py'}:build", "--model-arg", "dim=-1")),
                   "refused --model-arg dim=-1 (ValueError: dim must be positive)")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2]", "a JSON list, not an object"),
        ('{"task": 3, "metrics": {}}', "no task name"),
        ('{"task": "ImageNet-1K", "metrics": {"hit@1": "high"}}', "metric 'hit@1' is not"),
        ('{"task": "ImageNet-1K", "metrics": {"hit@1": 0.5}, "counts": []}', "'counts' is not"),
        ('{"task": "ImageNet-1K", "metrics": {"mrr": 0.5}}', "has no metric 'hit@1'"),
        ("\xff\xfe", "cannot read result"),
        ("{", "cannot read result"),
    ],
)
def test_unexpected_json_in_summary_is_one_line(tmp_path, content, problem):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "x.json").write_bytes(content.encode("latin-1"))
    line = one_line_error(invoke("summary", str(folder)), problem)
    assert "--overwrite" not in line
    if "has no metric" not in problem:
        assert f"move it out of {folder}" in line


def test_a_blocked_model_folder_is_refused_before_the_model_loads(data_dir, tmp_path,
                                                                  monkeypatch):
    built = tmp_path / "built.txt"
    monkeypatch.setenv("MMEB_TEST_BUILT", str(built))
    out = tmp_path / "results"
    out.mkdir()
    (out / "build").write_text("a file where the model's folder should be")
    one_line_error(invoke(*run_args(data_dir, out, "--model",
                                    f"{encoder_file(tmp_path / 'm')}:build")),
                   f"cannot write results to {out / 'build'}", "--output-dir / --name")
    assert not built.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_output_folder_is_refused_before_computing(data_dir, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    out.chmod(0o555)
    try:
        one_line_error(invoke(*run_args(data_dir, out, "--model", "random")),
                       f"cannot write results to {out / 'random'}")
    finally:
        out.chmod(0o755)


def test_a_full_disk_is_found_before_computing(data_dir, tmp_path, monkeypatch):
    built = tmp_path / "built.txt"
    monkeypatch.setenv("MMEB_TEST_BUILT", str(built))
    real = os.statvfs

    def nearly_full(path):
        stats = real(path)
        return os.statvfs_result((stats.f_bsize, 4096, stats.f_blocks, 10, 10, *stats[5:]))

    monkeypatch.setattr(os, "statvfs", nearly_full)
    one_line_error(invoke(*run_args(data_dir, tmp_path / "r", "--model",
                                    f"{encoder_file(tmp_path / 'm')}:build")),
                   "cannot write results to", "no space left", "free space")
    assert not built.exists()


def test_a_full_disk_at_write_time_says_the_score_and_leaves_nothing(data_dir, tmp_path,
                                                                     monkeypatch):
    import mmeb.results

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The folder's up-front probe passes; the disk fills while a result is written.
    monkeypatch.setattr(mmeb.results, "write_atomic", disk_full)
    out = tmp_path / "results"
    one_line_error(invoke(*run_args(data_dir, out, "--model", "random")),
                   f"cannot write {out / 'random' / 'ImageNet-1K.json'} (No space left on device)",
                   "ImageNet-1K was computed (hit@1 25.00%) but not saved")
    assert list((out / "random").iterdir()) == []


# --- minor ----------------------------------------------------------------------------------


def test_temporaries_of_a_killed_writer_are_removed_on_resume(data_dir, tmp_path):
    folder = tmp_path / "results" / "random"
    folder.mkdir(parents=True)
    stale = [folder / ".ImageNet-1K.json.4242-abcd1234.tmp", folder / ".MSCOCO_t2i.json.x_1.tmp"]
    for path in stale:
        path.write_bytes(b"")
    assert invoke(*run_args(data_dir, tmp_path / "results", "--model", "random")).exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["ImageNet-1K.json", "MSCOCO_t2i.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_follow_the_umask(data_dir, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert invoke(*run_args(data_dir, tmp_path / "r", "--model", "random")).exit_code == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "r" / "random").glob("*.json"):
        assert path.stat().st_mode & 0o777 == mode, path


def test_the_data_folder_is_checked_before_the_model_loads(data_dir, tmp_path, monkeypatch):
    built = tmp_path / "built.txt"
    monkeypatch.setenv("MMEB_TEST_BUILT", str(built))
    shutil.rmtree(data_dir / "MSCOCO_t2i")
    one_line_error(invoke(*run_args(data_dir, tmp_path / "r", "--model",
                                    f"{encoder_file(tmp_path / 'm')}:build")),
                   "MSCOCO_t2i: no folder")
    assert not built.exists()
    assert not list((tmp_path / "r").rglob("*.json"))


def test_a_data_folder_without_images_says_so(data_dir, tmp_path):
    shutil.rmtree(data_dir / "eval_images")
    one_line_error(invoke(*run_args(data_dir, tmp_path / "r", "--model", "random")),
                   f"the image folder {data_dir / 'eval_images'} does not exist", "--image-dir")


def test_results_record_what_identifies_them(data_dir, tmp_path):
    path = encoder_file(tmp_path / "m")
    out = tmp_path / "results"
    assert invoke(*run_args(data_dir, out, "--model", f"{path}:build")).exit_code == 0
    doc = json.loads((out / "build" / "ImageNet-1K.json").read_text())
    import hashlib

    assert doc["fingerprint"]["model"] == f"{path.resolve()}:build"
    assert doc["fingerprint"]["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc["fingerprint"]["data_sha256"] == doc["dataset"]["sha256"]
    assert doc["fingerprint"]["encoder_config"] == {"dim": 16, "seed": 0}
