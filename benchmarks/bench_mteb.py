"""Harness overhead of `mmeb run` against mteb's on the same data and encoder.

    OMP_NUM_THREADS=1 python benchmarks/bench_mteb.py [--repeats 3] [--work /tmp/mmeb-bench-mteb]
        [--out benchmarks/results/mteb.json]

Both harnesses evaluate the five MMEB-format tasks of perfdata.py (967 unique inputs) with the
probe encoder of probe.py (4 ms of GIL-free work per item after reading its image), each in a
fresh process; overhead = wall of the whole process - the probe's fixed work, as in the overhead
section of bench_perf.py. mteb (pinned below) is installed into its own virtual environment
under ``--work``, layered on this interpreter's packages (torch is not downloaded again), and
runs mteb_side.py there; mteb is never installed into the environment running this script.
Runs alternate between the two harnesses so that a change of machine load hits both alike. The
scores of both are compared metric by metric (the probe's vectors depend only on each input's
MMEB string, image path and image size, so both harnesses must rank alike).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_perf import ENV, PROBE, in_process_s, mmeb_run  # noqa: E402
from perfdata import TASKS, write_suite  # noqa: E402

MTEB_VERSION = "2.26.24"
UNIQUE_INPUTS = 967
MS = 4.0
# mmeb metric -> mteb score key (one relevant candidate per query: hit@k is recall@k; the pools
# hold under 1000 candidates, so mteb's mrr@1000 is the plain reciprocal rank)
METRICS = {"hit@1": "recall_at_1", "hit@5": "recall_at_5", "hit@10": "recall_at_10",
           "mrr": "mrr_at_1000", "ndcg@5": "ndcg_at_5", "ndcg@10": "ndcg_at_10"}
TOLERANCE = 1e-5  # mteb rounds its ranking metrics to 5 decimals


def mteb_python(work: Path) -> Path:
    """The interpreter of mteb's environment, created (or reused) under ``work``."""
    venv = work / "venv-mteb"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import mteb; print(mteb.__version__)"]
    if python.exists():
        done = subprocess.run(check, env=ENV, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == MTEB_VERSION:
            return python
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], check=True, capture_output=True,
                             text=True).stdout.strip()
    # addsitedir (not a bare path) so that the .pth files there run too: the editable install
    # of mmeb and any layering of this environment on another one carry over.
    lines = [f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages()]
    Path(purelib, "zz_base.pth").write_text("".join(lines))
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"mteb=={MTEB_VERSION}"],
                   check=True)
    done = subprocess.run(check, env=ENV, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == MTEB_VERSION, done.stdout
    return python


def mteb_run(python: Path, data: Path, work: Path, stats: Path) -> dict[str, Any]:
    """mteb_side.py in a fresh process: wall time, the probe's totals, scores, mteb's phases."""
    cache, scores = work / "mteb-cache", work / "mteb-scores.json"
    shutil.rmtree(cache, ignore_errors=True)
    stats.unlink(missing_ok=True)
    command = [str(python), str(HERE / "mteb_side.py"), str(data), str(cache), str(scores),
               "--ms", str(MS)]
    # no progress bars, as `mmeb run --no-progress`
    env = {**ENV, "PROBE_STATS": str(stats), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    start = time.perf_counter()
    env["BENCH_START"] = repr(time.time())
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    side = json.loads(scores.read_text())
    return {"wall_s": wall, **json.loads(stats.read_text()),
            "in_tasks_s": sum(side["phases_s"].values()),
            **{key: side[key] for key in ("startup_s", "evaluate_s", "main_s", "phases_s")},
            # what follows main(): the probe's exit hook, interpreter teardown
            "exit_s": wall - side["startup_s"] - side["main_s"], "scores": side["scores"],
            "versions": side["versions"]}


def mmeb_scores(folder: Path) -> dict[str, dict[str, float]]:
    return {doc["task"]: doc["metrics"] for doc in
            (json.loads(p.read_text()) for p in folder.rglob("*.json"))}


def compare_scores(mmeb: dict[str, dict[str, float]], mteb: dict[str, dict[str, float]]
                   ) -> dict[str, Any]:
    worst = max(abs(mmeb[task][ours] - mteb[task][theirs])
                for task in TASKS for ours, theirs in METRICS.items())
    return {"metrics": METRICS, "max_abs_diff": worst, "equal": worst <= TOLERANCE,
            "hit@1": {task: [mmeb[task]["hit@1"], mteb[task]["recall_at_1"]] for task in TASKS}}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "encoder_compute_s": statistics.median(r["compute_s"] for r in runs),
            "overhead_s": statistics.median(r["wall_s"] - r["compute_s"] for r in runs),
            # the same within the tasks' own timings (start-up, imports and exit left out)
            "in_tasks_overhead_s": statistics.median(r["in_tasks_s"] - r["compute_s"]
                                                     for r in runs),
            "encoder_items": sorted({r["items"] for r in runs})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mmeb-bench-mteb"))
    parser.add_argument("--out", default=str(HERE / "results" / "mteb.json"))
    args = parser.parse_args()
    if importlib.util.find_spec("mteb") is not None:
        raise SystemExit("mteb is importable here; it belongs in its own environment only "
                         "(this script creates one under --work): uninstall it from this one")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    python = mteb_python(work)
    data = write_suite(work / "suite")
    load = [os.getloadavg()]
    runs: dict[str, list[dict[str, Any]]] = {"mmeb_prefetch_2": [], "mmeb_prefetch_0": [],
                                             "mteb": []}
    for _ in range(args.repeats):  # alternate: a change of load hits every harness alike
        for prefetch in (2, 0):
            out = work / "mmeb-out"
            shutil.rmtree(out, ignore_errors=True)
            run = mmeb_run(["--model", PROBE, "--model-arg", f"ms={MS:g}", "--data-dir",
                            str(data), "--tasks", ",".join(TASKS), "--output-dir", str(out),
                            "--prefetch", str(prefetch)], stats=work / "probe.json")
            run["scores"] = mmeb_scores(out)
            run["in_tasks_s"] = in_process_s(out)  # the tasks' own timings, summed
            runs[f"mmeb_prefetch_{prefetch}"].append(run)
        runs["mteb"].append(mteb_run(python, data, work, work / "probe-mteb.json"))
        load.append(os.getloadavg())
    mmeb, mteb = summary(runs["mmeb_prefetch_2"]), summary(runs["mteb"])
    report = {
        "setup": {"tasks": list(TASKS), "unique_inputs": UNIQUE_INPUTS, "probe_ms_per_item": MS,
                  "batch_size": 32, "repeats": args.repeats,
                  "mmeb": "mmeb run --prefetch 2 (default) and --prefetch 0",
                  "mteb": "mteb.evaluate, custom AbsTaskRetrieval per task (mteb_side.py)"},
        "versions": {"python": platform.python_version(), "mmeb_side": {
            name: version(name) for name in ("mmeb", "numpy", "pyarrow", "pillow")},
            "mteb_side": runs["mteb"][0]["versions"]},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_start_and_after_each_repeat": load},
        "mmeb": mmeb,
        "mmeb_prefetch_0": summary(runs["mmeb_prefetch_0"]),
        "mteb": {**mteb,
                 **{key: statistics.median(r[key] for r in runs["mteb"])
                    for key in ("startup_s", "evaluate_s", "main_s", "exit_s")},
                 "phases_s": {name: statistics.median(r["phases_s"][name] for r in runs["mteb"])
                              for name in runs["mteb"][0]["phases_s"]}},
        "overhead_ratio_mmeb_over_mteb": mmeb["overhead_s"] / mteb["overhead_s"],
        "overhead_ratio_mmeb_prefetch_0_over_mteb":
            summary(runs["mmeb_prefetch_0"])["overhead_s"] / mteb["overhead_s"],
        "scores": compare_scores(runs["mmeb_prefetch_2"][0]["scores"], runs["mteb"][0]["scores"]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": {name: [{k: v for k, v in r.items() if k not in ("scores", "versions")}
                        for r in group]
                 for name, group in runs.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"overhead (wall - encoder compute), median of {args.repeats}: mmeb "
          f"{mmeb['overhead_s']:.2f} s, mteb {MTEB_VERSION} {mteb['overhead_s']:.2f} s, ratio "
          f"{report['overhead_ratio_mmeb_over_mteb']:.3f}; encoder items mmeb "
          f"{mmeb['encoder_items']} mteb {mteb['encoder_items']} (unique {UNIQUE_INPUTS}); "
          f"scores equal: {report['scores']['equal']}; load {load[0][0]:.1f}-"
          f"{max(x[0] for x in load):.1f} -> {out}")


if __name__ == "__main__":
    main()
