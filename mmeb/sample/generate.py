"""Writing the sample suite: MMEB-eval v1 and MMEB-train files plus a sha256 manifest.

Layout under ``out``::

    eval/<Task>/test-00000-of-00001.parquet     qry_text, qry_img_path, tgt_text[], tgt_img_path[]
    eval/<Task>/latents.parquet                 qry_key, tgt_keys[]: latents of each row (oracle)
    eval/eval_images/<Task>/*.jpg               paths in rows are relative to eval/eval_images/
    train/<Task>/original-00000-of-00001.parquet  qry, qry_image_path, pos_*, neg_*
    train/images/<Task>/Train/*.jpg             paths in rows are relative to train/
    manifest.json                               sha256 of every file above, written last

Each task draws from its own random stream (seeded by seed and task name) and writes only its
own folders, so tasks run in parallel processes and any subset is identical to the same tasks
of a complete run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import astuple
from pathlib import Path
from typing import Any

from mmeb.errors import MMEBError
from mmeb.sample.job import Job, Profile
from mmeb.sample.oracle import LATENTS_FILE
from mmeb.sample.spec import (
    MANIFEST,
    SAMPLE_TASKS,
    SAMPLE_VERSION,
    SCALES,
    full_tasks,
    kind_of,
)
from mmeb.tasks import TaskSpec

PROFILES = {
    "small": Profile(eval_px=96, train_px=64, train_pairs=2000, hard_negatives=4),
    # MMEB-sized: tiny pictures keep its ~116k files quick to write and to read back.
    "full": Profile(eval_px=64, train_px=64, train_pairs=2000, hard_negatives=3),
}
EVAL_FILE = "test-00000-of-00001.parquet"
TRAIN_FILE = "original-00000-of-00001.parquet"


def scale_tasks(scale: str) -> tuple[TaskSpec, ...]:
    if scale not in SCALES:
        raise MMEBError(f"unknown sample scale {scale!r}; valid scales: {', '.join(SCALES)}")
    return SAMPLE_TASKS if scale == "small" else full_tasks()


def _select(scale: str, names: list[str] | None) -> tuple[TaskSpec, ...]:
    specs = scale_tasks(scale)
    if names is None:
        return specs
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise MMEBError(f"unknown {scale} sample task(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(by_name)}")
    return tuple(by_name[n] for n in dict.fromkeys(names))


def generate(
    out: Path,
    *,
    seed: int = 0,
    scale: str = "small",
    tasks: list[str] | None = None,
    train_pairs: int | None = None,
    workers: int | None = None,
) -> Path:
    """Write the sample suite (or the named ``tasks`` of it) under ``out``; returns ``out``.

    The same ``seed``, ``scale`` and ``train_pairs`` give byte-identical files. ``train_pairs``
    overrides the training rows per task (eval files do not depend on it); ``workers`` is the
    number of processes (default: one per CPU, at most one per task); the files do not
    depend on it.
    """
    out = Path(out)
    specs = _select(scale, tasks)
    profile = PROFILES[scale]
    if train_pairs is not None:
        profile = Profile(profile.eval_px, profile.train_px, int(train_pairs),
                          profile.hard_negatives)
    out.mkdir(parents=True, exist_ok=True)
    # No manifest while files change: a folder without one is never taken as complete.
    (out / MANIFEST).unlink(missing_ok=True)
    count = max(1, min(len(specs), workers or os.cpu_count() or 1))
    if count == 1:
        results = [generate_task(str(out), spec.name, seed, scale, profile) for spec in specs]
    else:
        results = _run_workers(out, _balance(specs, profile, count), seed, scale, profile)
    files: dict[str, str] = {}
    for digests in results:
        files.update(digests)
    manifest = {
        "format": "mmeb-sample",
        "version": SAMPLE_VERSION,
        "seed": seed,
        "scale": scale,
        "train_pairs": profile.train_pairs,
        "tasks": [s.name for s in specs],
        "files": dict(sorted(files.items())),
    }
    _write_atomic(out / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return out


#: Rough cost of one row of each generator (pictures drawn), only to spread tasks over workers.
_COST = {"shapes": 1.0, "words": 1.0, "shape_vqa": 0.4, "word_vqa": 0.3, "caption_t2i": 2.0,
         "caption_i2t": 1.0, "near_dup": 3.0, "edit": 3.0, "cards_t2it": 2.0,
         "cards_it2it": 3.0, "grounding": 1.3, "matching": 1.3}


def _balance(specs: tuple[TaskSpec, ...], profile: Profile, count: int) -> list[list[str]]:
    """Split tasks into ``count`` groups of similar cost (largest first, to the lightest)."""

    def cost(spec: TaskSpec) -> float:
        train = profile.train_pairs if spec.train_config else 0
        return _COST[kind_of(spec)] * (5 * spec.num_queries + train)

    groups: list[list[str]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for spec in sorted(specs, key=cost, reverse=True):
        lightest = loads.index(min(loads))
        groups[lightest].append(spec.name)
        loads[lightest] += cost(spec)
    return [g for g in groups if g]


def _run_workers(
    out: Path, groups: list[list[str]], seed: int, scale: str, profile: Profile
) -> list[dict[str, str]]:
    """Generate each group of tasks in a child interpreter (``python -m mmeb.sample.worker``).

    Plain subprocesses rather than multiprocessing: they never re-import the caller's main
    module, so ``generate`` (and ``ensure_sample``) work from any script, notebook or test
    runner, without an ``if __name__ == "__main__"`` guard and without forking threads.
    """
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ)
    # The children must import this very copy of mmeb, however the caller found it.
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="mmeb-sample-") as tmp:
        running = []
        try:
            for i, names in enumerate(groups):
                result = Path(tmp) / f"{i}.json"
                request = {"out": str(out), "seed": seed, "scale": scale, "tasks": names,
                           "profile": list(astuple(profile)), "result": str(result)}
                proc = subprocess.Popen([sys.executable, "-m", "mmeb.sample.worker"],
                                        stdin=subprocess.PIPE, env=env)
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(request).encode())
                proc.stdin.close()
                running.append((proc, names, result))
            failed = [names for proc, names, _ in running if proc.wait() != 0]
        except BaseException:
            for proc, _, _ in running:
                proc.kill()
                proc.wait()
            raise
        if failed:
            raise MMEBError(f"generating {', '.join(n for g in failed for n in g)} failed; "
                            "see the error above")
        return [json.loads(result.read_text()) for _, _, result in running]


def _find(scale: str, name: str) -> TaskSpec:
    return _select(scale, [name])[0]


def generate_task(out: str, name: str, seed: int, scale: str, profile: Profile) -> dict[str, str]:
    """Generate one task; returns its files (relative to ``out``) and their sha256."""
    from mmeb.sample.datasets import BUILDERS
    from mmeb.sample.job import ImageSink
    from mmeb.sample.rng import Rng

    root = Path(out)
    spec = _find(scale, name)
    folder = spec.folder
    eval_dir, train_dir = root / "eval", root / "train"
    stale = [eval_dir / folder, eval_dir / "eval_images" / folder]
    if spec.train_config:
        stale += [train_dir / spec.train_config, train_dir / "images" / spec.train_config]
    for path in stale:  # a rerun into the same folder must not keep files of the last run
        shutil.rmtree(path, ignore_errors=True)
    train_sink = None
    if spec.train_config:
        train_sink = ImageSink(train_dir, f"images/{spec.train_config}/Train")
    job = Job(spec, profile, Rng("mmeb-sample", seed, spec.name),
              ImageSink(eval_dir / "eval_images", folder), train_sink)
    BUILDERS[kind_of(spec)](job)
    if len(job.eval_rows) != spec.num_queries or len(job.train_rows) != job.train_pairs:
        raise RuntimeError(f"{spec.name}: {len(job.eval_rows)} eval / {len(job.train_rows)} "
                           f"train rows, expected {spec.num_queries} / {job.train_pairs}")
    digests = {f"eval/eval_images/{rel}": d for rel, d in job.eval_images.digests.items()}
    digests.update(_write_eval(job, eval_dir / folder, root))
    if train_sink is not None:
        digests.update({f"train/{rel}": d for rel, d in train_sink.digests.items()})
        digests.update(_write_train(job, train_dir / str(spec.train_config), root))
    return digests


def _write_eval(job: Job, folder: Path, root: Path) -> dict[str, str]:
    import pyarrow as pa

    rows = job.eval_rows
    schema = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                        ("tgt_text", pa.list_(pa.string())),
                        ("tgt_img_path", pa.list_(pa.string()))])
    table = pa.table({
        "qry_text": [r.qry_text for r in rows],
        "qry_img_path": [r.qry_img_path for r in rows],
        "tgt_text": [r.tgt_text for r in rows],
        "tgt_img_path": [r.tgt_img_path for r in rows],
    }, schema=schema)
    # Row-aligned with the eval file; parquet's dictionary encoding keeps the MMEB-sized
    # twin's million keys per task to about a megabyte.
    latents = pa.table({"qry_key": [r.qry_key for r in rows],
                        "tgt_keys": [r.tgt_keys for r in rows]},
                       schema=pa.schema([("qry_key", pa.string()),
                                         ("tgt_keys", pa.list_(pa.string()))]))
    return {
        **_write_parquet(table, folder / EVAL_FILE, root),
        **_write_parquet(latents, folder / LATENTS_FILE, root),
    }


def _write_train(job: Job, folder: Path, root: Path) -> dict[str, str]:
    import pyarrow as pa

    columns = ("qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text",
               "neg_image_path")
    schema = pa.schema([(c, pa.string()) for c in columns])
    table = pa.table({c: [getattr(r, c) for r in job.train_rows] for c in columns},
                     schema=schema)
    return _write_parquet(table, folder / TRAIN_FILE, root)


def _write_parquet(table: Any, path: Path, root: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    # Every writer option spelled out, so a change of pyarrow defaults cannot change the bytes.
    pq.write_table(table, path, row_group_size=1 << 20, version="2.6", compression="snappy",
                   use_dictionary=True, write_statistics=True, data_page_version="1.0",
                   store_schema=True, write_page_index=False, write_page_checksum=False)
    return {_rel(path, root): hashlib.sha256(path.read_bytes()).hexdigest()}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise MMEBError(f"{root} is not a complete sample suite (no {MANIFEST})")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def verify(root: Path) -> list[str]:
    """Files of a generated suite that are missing or differ from the manifest (empty: intact)."""
    root = Path(root)
    problems = []
    for rel, digest in read_manifest(root)["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"changed: {rel}")
    return problems


def content_digest(root: Path) -> str:
    """One sha256 over the suite's contents that is the same on every machine.

    JPEG files count by their bytes, parquet files by their rows, because pyarrow
    stamps its own version into each file's footer (same rows, other bytes across versions).
    """
    import pyarrow.parquet as pq

    root = Path(root)
    digest = hashlib.sha256()
    for rel, file_digest in read_manifest(root)["files"].items():
        if rel.endswith(".parquet"):
            rows = pq.read_table(root / rel).to_pylist()
            canonical = json.dumps(rows, sort_keys=True, ensure_ascii=True).encode()
            file_digest = "rows:" + hashlib.sha256(canonical).hexdigest()
        digest.update(f"{rel} {file_digest}\n".encode())
    return digest.hexdigest()
