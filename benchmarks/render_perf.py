"""Render benchmarks/results/perf.json as the figures section of docs/PERFORMANCE.md.

    python benchmarks/render_perf.py [--json results/perf.json] [--mteb results/mteb.json]
        [--doc docs/PERFORMANCE.md]

Replaces the text between the ``<!-- figures -->`` and ``<!-- /figures -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _s(x: float) -> str:
    return f"{x:.2f} s"


def render(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    lines = [f"Machine: {m.get('platform', '?')}, Python {m.get('python', '?')}, "
             f"{m.get('cpus', '?')} CPU cores, no GPU; load average at start "
             f"{', '.join(f'{x:.1f}' for x in m.get('load_avg_at_start', []))}.", ""]
    lines += ["| target | measured | met | section (measured at, load avg) |", "|---|---|---|---|"]

    def row(target: str, measured: str, met: bool | None, section: str) -> None:
        when = r.get(section, {})
        stamp = f"`{section}` ({when.get('measured_at', '?')}, " \
                f"{when.get('load_avg', [0])[0]:.1f})"
        lines.append(f"| {target} | {measured} | {'-' if met is None else 'yes' if met else 'no'}"
                     f" | {stamp} |")

    if "overhead" in r:
        o = r["overhead"]
        on, off = o["prefetch_2"], o["prefetch_0"]
        row("wall(`mmeb run`) / encoder time <= 1.03 (probe 4 ms/item, 967 inputs)",
            f"{on['wall_over_encoder']:.3f} with prefetch ({_s(on['wall_s'])} against "
            f"{_s(on['encoder_compute_s'])}); {off['wall_over_encoder']:.3f} without "
            f"({_s(off['wall_s'])}, of which {_s(off['decode_inside_encode_s'])} decoding "
            f"inside encode); in-process part {_s(on['in_process_s'])}"
            + (f", of which reading rows {_s(on['load_rows_s_all_tasks'])} and scoring "
               f"{_s(on['score_s_all_tasks'])} for the 5 tasks"
               if "load_rows_s_all_tasks" in on else ""),
            on["wall_over_encoder"] <= 1.03, "overhead")
        row("encoder calls = unique inputs", f"{on['encoder_calls_items']} of 967",
            on["encoder_calls_items"] == 967, "overhead")
    if "overlap" in r:
        v = r["overlap"]
        row("decode-bound encoder: wall <= 1.15 x compute with overlap (~2x without)",
            f"{v['prefetch_2']['wall_over_compute']:.2f} with, "
            f"{v['prefetch_0']['wall_over_compute']:.2f} without "
            f"({v['decode_ms_per_image']:.1f} ms per image, {v['images']} images)",
            v["prefetch_2"]["wall_over_compute"] <= 1.15, "overlap")
    if "cache" in r:
        c = r["cache"]
        row("second run with the cache: 0 encoder calls, wall <= 5% of the first",
            f"{max(c['second_encoder_items'])} calls; {c['second_over_first']:.1%} of the "
            f"first's wall ({_s(c['second_wall_s'])} / {_s(c['first_wall_s'])}); in-process "
            f"{c['second_over_first_in_process']:.1%} ({_s(c['second_in_process_s'])})",
            max(c["second_encoder_items"]) == 0 and c["second_over_first"] <= 0.05, "cache")
        row("changed adapter setting: recomputed", f"{min(c['changed_setting_encoder_items'])} "
            "of 967 inputs encoded again", min(c["changed_setting_encoder_items"]) == 967,
            "cache")
    if "naive" in r and "overhead" in r:
        n = r["naive"]
        wall = r["overhead"]["prefetch_2"]["wall_s"]
        row(">= 10x faster than a naive per-query loop",
            f"{n['extrapolated_wall_s'] / wall:.0f}x ({_s(n['extrapolated_wall_s'])}, "
            f"extrapolated from {n['rows_measured']} rows, against {_s(wall)})",
            n["extrapolated_wall_s"] / wall >= 10, "naive")
    mteb = r.get("mteb_comparison")
    if mteb:
        ours, theirs = mteb["mmeb"], mteb["mteb"]
        ratio = mteb["overhead_ratio_mmeb_over_mteb"]
        lines.append(
            f"| harness overhead <= 1/4 of mteb's (`bench_mteb.py`) | {ratio:.3f}: "
            f"{_s(ours['overhead_s'])} for `mmeb run` against {_s(theirs['overhead_s'])} for "
            f"mteb {mteb['versions']['mteb_side']['mteb']}, {ours['encoder_items'][0]} and "
            f"{theirs['encoder_items'][0]} inputs encoded, scores equal: "
            f"{mteb['scores']['equal']}; within the tasks only (start-up, imports, exit left "
            f"out) {_s(ours['in_tasks_overhead_s'])} against "
            f"{_s(theirs['in_tasks_overhead_s'])} "
            f"({ours['in_tasks_overhead_s'] / theirs['in_tasks_overhead_s']:.2f}) | "
            f"{'yes' if ratio <= 0.25 else 'no'} | `mteb.json` ({mteb['measured_at']}, "
            f"{mteb['machine']['load_avg_start_and_after_each_repeat'][0][0]:.1f}) |")
    else:
        row("harness overhead <= 1/4 of mteb's", "not measured: run bench_mteb.py", None,
            "overhead")
    if "memory" in r:
        mem = r["memory"]
        sizes = [k for k in ("1000", "10000", "100000") if k in mem]
        per = ", ".join(f"{int(k) // 1000}k: {mem[k]['peak_above_imports_mb']:.0f} MB "
                        f"(rows loaded {mem[k]['after_loading_rows_mb']:.0f}, vectors + index "
                        f"arrays {mem[k]['vectors_mb'] + mem[k]['index_arrays_mb']:.0f})"
                        for k in sizes)
        beyond = [mem[k]["beyond_vectors_mb"] for k in sizes]
        row("peak memory flat (10%) beyond the vectors, 1k/10k/100k queries",
            f"{per}; peak beyond vectors and index arrays: "
            + ", ".join(f"{x:.0f} MB" for x in beyond), max(beyond) <= 1.1 * min(beyond),
            "memory")
    if "torchrun" in r:
        t = r["torchrun"]
        for mode, what in (("spin", "CPU-bound probe"), ("sleep", "waiting probe (GPU-like)")):
            if mode in t:
                x = t[mode]
                fixed = t.get("fixed")
                launch = (f"; fixed cost of a launch (0 ms probe) {_s(fixed['one_process_s'])}"
                          f" for 1 process, {_s(fixed['two_processes_s'])} under torchrun"
                          if fixed else "")
                row(f"torchrun 2 processes, {what}: identical files, >= 1.7x",
                    f"identical: {x['identical_results']}; {x['speedup']:.2f}x wall "
                    f"({_s(x['one_process_s'])} -> {_s(x['two_processes_s'])}, probe "
                    f"{t['probe_ms_per_item']:g} ms/item, importing torch); "
                    f"{x['speedup_in_process']:.2f}x in-process; importing torch.distributed "
                    f"{_s(t['import_torch_distributed_s'])}{launch}",
                    x["identical_results"] and x["speedup"] >= 1.7, "torchrun")
    if "imports" in r:
        imp = r["imports"]
        lines += ["", "Import cost of `mmeb run` (top-level packages, `python -X importtime`, "
                  f"pandas imported: {imp['pandas_imported']}):", "",
                  "| package | cumulative import |", "|---|---|"]
        lines += [f"| {k} | {v * 1000:.0f} ms |" for k, v in imp["top_level_import_s"].items()
                  if v >= 0.003]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default=str(HERE / "results" / "perf.json"))
    parser.add_argument("--mteb", default=str(HERE / "results" / "mteb.json"))
    parser.add_argument("--doc", default=str(HERE.parent / "docs" / "PERFORMANCE.md"))
    args = parser.parse_args()
    report = json.loads(Path(args.json).read_text())
    mteb = Path(args.mteb)
    if mteb.exists():
        report["mteb_comparison"] = json.loads(mteb.read_text())
    figures = render(report)
    doc = Path(args.doc)
    text = doc.read_text()
    new = re.sub(r"<!-- figures -->.*<!-- /figures -->",
                 lambda _m: f"<!-- figures -->\n{figures}\n<!-- /figures -->", text, flags=re.S)
    doc.write_text(new)
    print(figures)


if __name__ == "__main__":
    main()
