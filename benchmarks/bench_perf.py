"""Performance and scale of `mmeb run`: every figure of docs/PERFORMANCE.md in one command.

    OMP_NUM_THREADS=1 python benchmarks/bench_perf.py [--repeats 3] [--only overhead,cache]
        [--work /tmp/mmeb-bench] [--out benchmarks/results/perf.json]

Sections (each reports medians over ``--repeats`` runs of the real command in a fresh process):

- ``imports``: import cost of what `mmeb run` loads (python -X importtime), pandas absent;
- ``overhead``: wall(`mmeb run`) / the probe encoder's own time (4 ms per item, reading its
  images in ``encode``), 5 MMEB-format tasks, 967 unique inputs, with and without prefetch;
- ``overlap``: an encoder whose compute per image equals that image's decode time;
- ``cache``: a second run on the same cache (fresh output folder), then a changed adapter setting;
- ``naive``: a per-query loop (encode each row's query and candidates, score) on the same data;
- ``memory``: peak RSS of one task with 1k, 10k and 100k queries (random encoder, in-process);
- ``torchrun``: 1 process against `torchrun --nproc_per_node 2` (gloo), result files compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from perfdata import TASKS, write_suite, write_text_task  # noqa: E402

PROBE = f"{HERE / 'probe.py'}:build"
VOLATILE = ("timings", "date", "versions")
# Bytecode is written and reused as in an installed package (pip compiles at install time);
# without it every run would compile mmeb's modules again.
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1"}


def compile_packages() -> None:
    """Bytecode for mmeb's packages before anything is timed."""
    import importlib.util

    folders = []
    for name in ("mmeb", "mmeb.models", "mmeb.leaderboard"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.extend(spec.submodule_search_locations)
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders, str(HERE)], env=ENV,
                   check=True, stdout=subprocess.DEVNULL)


def mmeb_run(args: list[str], *, stats: Path, launcher: list[str] | None = None
             ) -> dict[str, Any]:
    """Run `mmeb run` in a fresh process; wall time and the probe's totals (all ranks)."""
    for old in stats.parent.glob(stats.name + "*"):
        old.unlink()
    command = [*(launcher or [sys.executable]), "-m", "mmeb", "run", *args, "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, env={**ENV, "PROBE_STATS": str(stats)}, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    totals: dict[str, float] = {}
    for path in stats.parent.glob(stats.name + "*"):
        for key, value in json.loads(path.read_text()).items():
            totals[key] = totals.get(key, 0) + value
    return {"wall_s": wall, **totals}


def documents(folder: Path) -> dict[str, Any]:
    out = {}
    for path in sorted(p for p in folder.rglob("*.json")):
        doc = json.loads(path.read_text())
        for key in VOLATILE:
            doc.pop(key, None)
        out[str(path.relative_to(folder))] = doc
    return out


def in_process_s(folder: Path, phase: str | None = None) -> float:
    """Summed task timings of the result files (one phase, e.g. ``load_s``, or all)."""
    total = 0.0
    for path in folder.rglob("*.json"):
        timings = json.loads(path.read_text())["timings"]
        total += timings.get(phase, 0.0) if phase else sum(timings.values())
    return total


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# sections ------------------------------------------------------------------------------------


def bench_imports(work: Path, _repeats: int) -> dict[str, Any]:
    data = write_suite(work / "suite")
    out = work / "imports-out"
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mmeb", "run", "--model", "random",
         "--data-dir", str(data), "--tasks", ",".join(TASKS), "--output-dir", str(out),
         "--no-progress"], env=ENV, capture_output=True, text=True, check=True)
    packages: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 1:  # top-level imports only
            name = match.group(3).split(".")[0]
            packages[name] = packages.get(name, 0) + int(match.group(1)) / 1e6
    top = dict(sorted(packages.items(), key=lambda kv: -kv[1])[:12])
    return {"top_level_import_s": top, "pandas_imported": "pandas" in packages,
            "total_import_s": sum(packages.values())}


def bench_overhead(work: Path, repeats: int) -> dict[str, Any]:
    data = write_suite(work / "suite")
    result: dict[str, Any] = {"unique_inputs": 967, "probe_ms_per_item": 4}
    for prefetch in (0, 2):
        runs = []
        for _ in range(repeats):
            out = work / "overhead-out"
            shutil.rmtree(out, ignore_errors=True)
            run = mmeb_run(["--model", PROBE, "--model-arg", "ms=4", "--data-dir", str(data),
                            "--tasks", ",".join(TASKS), "--output-dir", str(out),
                            "--prefetch", str(prefetch)], stats=work / "probe.json")
            run["in_process_s"] = in_process_s(out)
            run["load_rows_s"] = in_process_s(out, "load_s")
            run["score_s"] = in_process_s(out, "score_s")
            runs.append(run)
        assert all(r["items"] == 967 for r in runs), runs
        result[f"prefetch_{prefetch}"] = {
            "wall_s": median(runs, "wall_s"),
            "encoder_compute_s": median(runs, "compute_s"),
            "inside_encode_s": median(runs, "encode_s"),
            "decode_inside_encode_s": median(runs, "decode_s"),
            "in_process_s": median(runs, "in_process_s"),
            "load_rows_s_all_tasks": median(runs, "load_rows_s"),
            "score_s_all_tasks": median(runs, "score_s"),
            "wall_over_encoder": statistics.median(r["wall_s"] / r["compute_s"] for r in runs),
            "wall_over_inside_encode": statistics.median(r["wall_s"] / r["encode_s"]
                                                         for r in runs),
            "encoder_calls_items": runs[0]["items"],
            "runs": runs,
        }
    return result


def _decode_ms(data: Path) -> float:
    from mmeb.items import Item

    paths = sorted((data / "eval_images").rglob("*.jpg"))[:60]
    times = []
    for path in paths:
        start = time.perf_counter()
        Item(raw="", text="", image_path=str(path)).image  # noqa: B018
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_overlap(work: Path, repeats: int) -> dict[str, Any]:
    data = write_suite(work / "overlap-suite", rows=200, pools=(200,), image_size=640,
                       tasks=("NIGHTS",))
    ms = _decode_ms(data)
    result: dict[str, Any] = {"images": 400, "decode_ms_per_image": ms}
    for prefetch in (0, 2):
        runs = []
        for _ in range(repeats):
            out = work / "overlap-out"
            shutil.rmtree(out, ignore_errors=True)
            runs.append(mmeb_run(["--model", PROBE, "--model-arg", f"ms={ms:.3f}", "--data-dir",
                                  str(data), "--tasks", "NIGHTS", "--output-dir", str(out),
                                  "--prefetch", str(prefetch)], stats=work / "probe.json"))
        result[f"prefetch_{prefetch}"] = {
            "wall_s": median(runs, "wall_s"),
            "encoder_compute_s": median(runs, "compute_s"),
            "wall_over_compute": statistics.median(r["wall_s"] / r["compute_s"] for r in runs),
            "runs": runs,
        }
    return result


def bench_cache(work: Path, repeats: int) -> dict[str, Any]:
    data = write_suite(work / "suite")
    base = ["--model", PROBE, "--model-arg", "ms=4", "--data-dir", str(data), "--tasks",
            ",".join(TASKS)]
    runs = []
    for _ in range(repeats):
        cache = work / "embcache"
        shutil.rmtree(cache, ignore_errors=True)
        trio = {}
        for label, extra in (("first", []), ("second", []),
                             ("changed_setting", ["--model-arg", "variant=1"])):
            out = work / f"cache-out-{label}"
            shutil.rmtree(out, ignore_errors=True)
            trio[label] = mmeb_run([*base, *extra, "--output-dir", str(out), "--cache-dir",
                                    str(cache)], stats=work / "probe.json")
            trio[label]["in_process_s"] = in_process_s(out)
        same = documents(work / "cache-out-first") == documents(work / "cache-out-second")
        trio["results_identical"] = same
        runs.append(trio)
    return {
        "first_wall_s": statistics.median(r["first"]["wall_s"] for r in runs),
        "second_wall_s": statistics.median(r["second"]["wall_s"] for r in runs),
        "second_over_first": statistics.median(r["second"]["wall_s"] / r["first"]["wall_s"]
                                               for r in runs),
        "first_in_process_s": statistics.median(r["first"]["in_process_s"] for r in runs),
        "second_in_process_s": statistics.median(r["second"]["in_process_s"] for r in runs),
        "second_over_first_in_process": statistics.median(
            r["second"]["in_process_s"] / r["first"]["in_process_s"] for r in runs),
        "second_encoder_items": [r["second"].get("items", 0) for r in runs],
        "changed_setting_encoder_items": [r["changed_setting"].get("items", 0) for r in runs],
        "results_identical": all(r["results_identical"] for r in runs),
        "runs": runs,
    }


def bench_naive(work: Path, _repeats: int, rows_per_task: int = 5) -> dict[str, Any]:
    """What a first script does: per row, encode the query and its candidates, then rank."""
    import numpy as np
    import pyarrow.parquet as pq
    from probe import Probe

    from mmeb.instructions import parse
    from mmeb.items import Item, Side
    from mmeb.tasks import get_task

    data = write_suite(work / "suite")
    probe = Probe(ms=4)
    start = time.perf_counter()
    total_rows = 0
    for name in TASKS:
        task = get_task(name)
        table = pq.read_table(data / name).to_pylist()
        total_rows += len(table)
        for row in table[:rows_per_task]:
            def item(raw: str, path: str) -> Item:
                return Item(raw=raw, text=parse(raw, None).text,
                            image_path=str(data / "eval_images" / path) if path else None)
            q = probe.encode([item(row["qry_text"], row["qry_img_path"])], side=Side.QUERY,
                             task=task)
            c = probe.encode([item(t, p) for t, p in zip(row["tgt_text"], row["tgt_img_path"],
                                                         strict=True)],
                             side=Side.TARGET, task=task)
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            c = c / np.linalg.norm(c, axis=1, keepdims=True)
            _ = int((c @ q[0] > c[0] @ q[0]).sum())
    measured = time.perf_counter() - start
    per_row = measured / (rows_per_task * len(TASKS))
    return {"rows_measured": rows_per_task * len(TASKS), "measured_s": measured,
            "rows_total": total_rows, "encoder_items_measured": probe.items,
            "extrapolated_wall_s": per_row * total_rows,
            "note": "linear in rows: every row encodes its query and all its candidates"}


MEMORY_CHILD = """
import json, resource, sys, time
import numpy as np
import pyarrow, pyarrow.parquet
from mmeb.data import load_task_inputs
from mmeb.engine import evaluate_inputs
from mmeb.random_encoder import RandomEncoder
from mmeb.tasks import get_task

def peak():  # this process image's high-water mark, in KiB. Not ru_maxrss: Linux carries
    # that over exec from the forked parent, so a large benchmark process would set the floor.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

def current():  # resident now, in KiB (the peak of importing may lie above it)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024

base = current()
t = time.perf_counter()
inputs, _ = load_task_inputs(get_task("MSCOCO_i2t"), data_dir=sys.argv[1])
loaded = peak()
ev = evaluate_inputs(RandomEncoder(dim=64), inputs, progress=False, batch_size=256)
print(json.dumps({"base_kb": base, "loaded_kb": loaded, "peak_kb": peak(),
                  "seconds": time.perf_counter() - t,
                  "unique_queries": ev.counts["unique_queries"],
                  "unique_candidates": ev.counts["unique_candidates"]}))
"""


def bench_memory(work: Path, repeats: int) -> dict[str, Any]:
    result: dict[str, Any] = {"dim": 64, "candidates_per_query": 10, "candidate_pool": 1000}
    for n in (1_000, 10_000, 100_000):
        data = write_text_task(work / f"memory-{n}", rows=n)
        runs = []
        for _ in range(max(1, repeats - 1)):
            done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(data)], env=ENV,
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        # Peaks above the resident size after imports; the import peak itself is a floor.
        peak = statistics.median(r["peak_kb"] - r["base_kb"] for r in runs) / 1024
        loading = statistics.median(r["loaded_kb"] - r["base_kb"] for r in runs) / 1024
        # What must grow with the queries: the engine's float64 vector of each query (the
        # encoder's float32 output and the scorer's float32 copy exist per batch only) and the
        # rows' index arrays (query index + padded candidates).
        vectors = n * 64 * 8 / 2**20
        indexes = n * (1 + 10) * 8 / 2**20
        result[str(n)] = {"peak_above_imports_mb": peak, "after_loading_rows_mb": loading,
                          "encode_and_score_mb": peak - loading, "vectors_mb": vectors,
                          "index_arrays_mb": indexes,
                          "beyond_vectors_mb": peak - vectors - indexes,
                          "per_query_beyond_vectors_kb": (peak - vectors - indexes) * 1024 / n,
                          "seconds": statistics.median(r["seconds"] for r in runs)}
    return result


def bench_torchrun(work: Path, repeats: int, ms: float = 40.0) -> dict[str, Any]:
    """1 process against 2 under torchrun, for a probe that imports torch (as every built-in
    adapter does) and whose forward dominates (``ms`` per item; 967 items). The same command
    with a 0 ms probe measures the fixed costs of each launch (start-up, imports, gloo)."""
    data = write_suite(work / "suite")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch.distributed"], env=ENV, check=True)
    result: dict[str, Any] = {"probe_ms_per_item": ms,
                              "import_torch_distributed_s": time.perf_counter() - start}
    port = iter(range(29700, 29800))

    def pair(mode: str, per_item: float) -> dict[str, Any]:
        base = ["--model", PROBE, "--model-arg", f"ms={per_item}", "--model-arg",
                f"mode={mode}", "--model-arg", "torch=true", "--data-dir", str(data),
                "--tasks", ",".join(TASKS)]
        one_out, two_out = work / "tr-one", work / "tr-two"
        for folder in (one_out, two_out):
            shutil.rmtree(folder, ignore_errors=True)
        one = mmeb_run([*base, "--output-dir", str(one_out)], stats=work / "probe.json")
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(next(port))]
        two = mmeb_run([*base, "--output-dir", str(two_out)], stats=work / "probe.json",
                       launcher=launcher)
        return {"one_s": one["wall_s"], "two_s": two["wall_s"],
                "one_in_process_s": in_process_s(one_out),
                "two_in_process_s": in_process_s(two_out),
                "items_one": one["items"], "items_two": two["items"],
                "identical": documents(one_out) == documents(two_out)}

    fixed = [pair("sleep", 0.0) for _ in range(repeats)]
    result["fixed"] = {"one_process_s": statistics.median(r["one_s"] for r in fixed),
                       "two_processes_s": statistics.median(r["two_s"] for r in fixed)}
    for mode in ("spin", "sleep"):
        runs = [pair(mode, ms) for _ in range(repeats)]
        result[mode] = {
            "one_process_s": statistics.median(r["one_s"] for r in runs),
            "two_processes_s": statistics.median(r["two_s"] for r in runs),
            "speedup": statistics.median(r["one_s"] / r["two_s"] for r in runs),
            "speedup_in_process": statistics.median(
                r["one_in_process_s"] / r["two_in_process_s"] for r in runs),
            "identical_results": all(r["identical"] for r in runs),
            "runs": runs,
        }
    return result


SECTIONS = {"imports": bench_imports, "overhead": bench_overhead, "overlap": bench_overlap,
            "cache": bench_cache, "naive": bench_naive, "memory": bench_memory,
            "torchrun": bench_torchrun}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mmeb-bench"))
    parser.add_argument("--out", default=str(HERE / "results" / "perf.json"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    compile_packages()
    report["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    for name in args.only.split(","):
        start = time.perf_counter()
        report[name] = SECTIONS[name](work, args.repeats)
        report[name]["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report[name]["load_avg"] = os.getloadavg()
        brief = {k: v for k, v in report[name].items() if k != "runs"}
        print(f"{name} ({time.perf_counter() - start:.0f} s):",
              json.dumps(brief, default=str)[:1500], flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
