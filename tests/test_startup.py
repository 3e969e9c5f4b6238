"""What `mmeb run` loads, from start-up to the summary table it prints: nothing it does not use.

The table (with bootstrap intervals) comes from the leaderboard's comparison records; only the
leaderboard's frame-based outputs (csv, json, the site) load pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Runs the real command in a fresh interpreter, then reports which modules got imported.
WRAPPER = """
import json, sys
import mmeb.runner
from mmeb.cli import main

evaluated = []
run = mmeb.runner.run
def recording_run(*args, **kwargs):
    outcome = run(*args, **kwargs)
    evaluated.extend(sorted(sys.modules))  # every task evaluated and written by now
    return outcome
mmeb.runner.run = recording_run
code = None
try:
    main(sys.argv[2:], prog_name="mmeb")
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": evaluated, "at_exit": sorted(sys.modules)}, f)
"""


def test_mmeb_run_on_the_sample_suite_does_not_import_pandas(tmp_path: Path) -> None:
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(report), "run", "--model", "random", "--split",
         "sample", "--tasks", "Sample-Shapes,Sample-Caption-t2i", "--limit", "20",
         "--output-dir", str(tmp_path / "out"), "--no-progress"],
        check=True, capture_output=True, text=True,
    )
    loaded = json.loads(report.read_text())
    assert loaded["code"] in (0, None)
    assert (tmp_path / "out" / "random" / "Sample-Shapes.json").exists()
    top = {name.partition(".")[0] for name in loaded["modules"]}
    assert "pyarrow" in top  # the run did read parquet rows
    assert not top & {"pandas", "torch", "transformers", "tqdm"}  # no bar is drawn here
    # The summary table was printed, and printing it loaded no pandas either.
    assert "Sample-Shapes" in done.stdout
    assert "[" in done.stdout.split("Sample-Shapes")[1].splitlines()[0]  # with its interval
    whole_run = {name.partition(".")[0] for name in loaded["at_exit"]}
    assert "mmeb" in whole_run
    assert not whole_run & {"pandas", "torch", "transformers", "tqdm"}
