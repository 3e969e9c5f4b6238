"""MMEB-train pairs: reading, capping, checking, and a deterministic, resumable order.

Every source arrives in one layout, read by one code path: per subset a table with the columns
``qry, qry_image_path, pos_text, pos_image_path`` (and ``neg_text, neg_image_path`` in some
subsets) whose image paths are relative to an image root.

- ``data: sample``: the sample suite's ``train/`` folder (offline, generated on first use);
- ``data: DIR``: a local copy, ``DIR/<Subset>/<split>-*.parquet``, images under ``DIR`` (or
  ``image_dir``), e.g. ``images/<Subset>/Train/x.jpg`` as in TIGER-Lab/MMEB-train;
- ``data: hub``: ``TIGER-Lab/MMEB-train`` through ``datasets``, its ``images_zip/<Subset>.zip``
  extracted once into the mmeb cache.

The order of pairs is a pure function of (seed, position), so a run resumes at the exact pair it
stopped before, on any number of processes.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmeb.errors import DataError
from mmeb.tasks import MMEB_TRAIN_DATASET, MMEB_V1_TASKS

log = logging.getLogger("vlm2vec")

TRAIN_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEG_COLUMNS = ("neg_text", "neg_image_path")
#: The 20 MMEB-train subsets of the paper (in the task table's order).
PAPER_SUBSETS: tuple[str, ...] = tuple(t.train_config for t in MMEB_V1_TASKS if t.train_config)
#: Bad rows named one by one in the log (all of them go to bad_rows.jsonl).
NAMED_IN_LOG = 10


@dataclass(frozen=True)
class Input:
    """One side of a pair as the model sees it: the raw MMEB string and an image file."""

    text: str
    image: str | None  # absolute path, or None for text-only
    origin: str = ""  # "CIRR row 12 query", for error messages
    #: The picture as it is to be encoded when it is not the file as it is (augmentation);
    #: ``image`` still names the file it came from.
    pixels: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Pair:
    query: Input
    target: Input
    negative: Input | None


@dataclass
class Subset:
    """The kept rows of one subset, column-wise (cheap for 50K-row subsets)."""

    name: str
    rows: list[int]  # row numbers in the source table
    qry: list[str]
    qry_image: list[str | None]
    pos: list[str]
    pos_image: list[str | None]
    neg: list[str] | None = None
    neg_image: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def has_negative(self, i: int) -> bool:
        return self.neg is not None and bool(self.neg[i] or (self.neg_image or [None])[i])

    def pair(self, i: int, hard_negatives: bool) -> Pair:
        where = f"{self.name} row {self.rows[i]}"
        negative = None
        if hard_negatives and self.has_negative(i):
            assert self.neg is not None
            assert self.neg_image is not None
            negative = Input(self.neg[i], self.neg_image[i], f"{where} negative")
        return Pair(Input(self.qry[i], self.qry_image[i], f"{where} query"),
                    Input(self.pos[i], self.pos_image[i], f"{where} target"), negative)

    def keep(self, keep: Sequence[int]) -> Subset:
        def pick(col: list[Any] | None) -> list[Any] | None:
            return None if col is None else [col[i] for i in keep]

        return Subset(self.name, [self.rows[i] for i in keep], [self.qry[i] for i in keep],
                      [self.qry_image[i] for i in keep], [self.pos[i] for i in keep],
                      [self.pos_image[i] for i in keep], pick(self.neg), pick(self.neg_image))


@dataclass
class TrainData:
    subsets: list[Subset]
    hard_negatives: bool
    bad_rows: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> list[int]:
        return [len(s) for s in self.subsets]

    def pair(self, index: tuple[int, int]) -> Pair:
        subset, row = index
        return self.subsets[subset].pair(row, self.hard_negatives)


# -- sources ------------------------------------------------------------------------------


def _hub_table(subset: str, split: str, revision: str | None) -> Any:
    """One MMEB-train subset as a pyarrow table, through ``datasets`` (cached by it)."""
    try:
        import datasets
    except ImportError:
        raise DataError("data: hub needs the `datasets` package; pip install 'mmeb[train]'") \
            from None
    try:
        ds = datasets.load_dataset(MMEB_TRAIN_DATASET, subset, split=split, revision=revision)
    except Exception as exc:  # offline, unknown config or split, connection errors...
        raise DataError(
            f"{MMEB_TRAIN_DATASET} {subset} split {split}: cannot load ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); check the subset and split names, "
            "or download it where the Hub is reachable and pass data: DIR") from None
    return ds.data.table


def _hub_zip(subset: str, revision: str | None) -> Path:
    """The image archive of one subset, downloaded once by huggingface_hub."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=MMEB_TRAIN_DATASET, repo_type="dataset",
                                    filename=f"images_zip/{subset}.zip", revision=revision))
    except Exception as exc:
        raise DataError(f"{MMEB_TRAIN_DATASET}: cannot fetch images_zip/{subset}.zip "
                        f"({type(exc).__name__}); pass image_dir: DIR with the extracted "
                        "images") from None


def _hub_image_resolver(subset: str, revision: str | None, first_path: str | None
                        ) -> Callable[[str], str]:
    """Extract ``images_zip/<subset>.zip`` once; returns row path -> file path."""
    from mmeb.hub import extract_zip
    from mmeb.paths import cache_dir

    target = cache_dir() / "mmeb-train-images" / (revision or "main") / subset
    if not target.is_dir():
        extract_zip(_hub_zip(subset, revision), target)
    # Rows say images/<S>/Train/x.jpg; the archive may hold that whole path or drop its first
    # components (<S>/Train/x.jpg, Train/x.jpg): keep the first reading that finds the file.
    drop = 0
    if first_path is not None:
        parts = Path(first_path).parts
        drop = next((k for k in range(len(parts)) if (target.joinpath(*parts[k:])).is_file()), 0)

    def resolve(rel: str) -> str:
        return str(target.joinpath(*Path(rel).parts[drop:]))

    return resolve


def _local_table(subset: str, folder: Path, split: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sub = folder / subset
    if not sub.is_dir():
        raise DataError(f"data: no folder {sub}; expected {folder}/<Subset>/{split}-*.parquet "
                        "(check subsets and data)")
    files = sorted(sub.glob(f"{split}-*.parquet"))
    if not files:
        raise DataError(f"data: no {split}-*.parquet in {sub} (check split: original or "
                        "diverse_instruction)")
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{file}: cannot read ({exc})") from None
    return pa.concat_tables(tables, promote_options="default")


def _local_subsets(folder: Path, split: str) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"data: {folder} is not a folder (data takes sample, hub or a folder)")
    found = sorted(p.name for p in folder.iterdir()
                   if p.is_dir() and any(p.glob(f"{split}-*.parquet")))
    if not found:
        raise DataError(f"data: no <Subset>/{split}-*.parquet under {folder}")
    return found


def _subset_from_table(name: str, table: Any, resolve: Callable[[str], str]) -> Subset:
    missing = [c for c in TRAIN_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; MMEB-train rows have "
                        f"{', '.join(TRAIN_COLUMNS + NEG_COLUMNS)}")

    def texts(col: str) -> list[str]:
        return ["" if v is None else str(v) for v in table.column(col).to_pylist()]

    def images(col: str) -> list[str | None]:
        return [resolve(v) if v else None for v in table.column(col).to_pylist()]

    has_neg = all(c in table.column_names for c in NEG_COLUMNS)
    return Subset(name, list(range(table.num_rows)), texts("qry"), images("qry_image_path"),
                  texts("pos_text"), images("pos_image_path"),
                  texts("neg_text") if has_neg else None,
                  images("neg_image_path") if has_neg else None)


def _under(root: Path) -> Callable[[str], str]:
    return lambda rel: str(root / rel)


def _first_image(table: Any) -> str | None:
    for col in ("qry_image_path", "pos_image_path"):
        if col in table.column_names:
            for v in table.column(col).to_pylist():
                if v:
                    return str(v)
    return None


def read_subsets(data: str, subsets: Sequence[str], split: str, image_dir: str | None,
                 hub_revision: str | None = None) -> tuple[list[Subset], dict[str, Any]]:
    """Read the rows of ``subsets`` (all found when empty) from ``data``; no cap, no checks."""
    if data == "hub":
        names = list(subsets) or list(PAPER_SUBSETS)
        out = []
        for name in names:
            table = _hub_table(name, split, hub_revision)
            resolve = (_under(Path(image_dir).expanduser()) if image_dir
                       else _hub_image_resolver(name, hub_revision, _first_image(table)))
            out.append(_subset_from_table(name, table, resolve))
        return out, {"kind": "hub", "dataset": MMEB_TRAIN_DATASET, "split": split,
                     "revision": hub_revision}
    if data == "sample":
        from mmeb.sample import ensure_sample

        folder = ensure_sample() / "train"
        kind = "sample"
    else:
        folder = Path(data).expanduser()
        kind = "local"
    names = list(subsets) or _local_subsets(folder, split)
    root = Path(image_dir).expanduser() if image_dir else folder
    out = [_subset_from_table(n, _local_table(n, folder, split), _under(root)) for n in names]
    return out, {"kind": kind, "folder": str(folder), "split": split, "image_root": str(root)}


# -- cap, checks --------------------------------------------------------------------------


def cap(subset: Subset, limit: int, how: str, seed: int) -> Subset:
    """At most ``limit`` rows: the first ones (the original's ``split[:N]``) or a seeded sample."""
    if limit <= 0 or len(subset) <= limit:
        return subset
    if how == "first":
        return subset.keep(range(limit))
    rng = np.random.default_rng([seed, zlib.crc32(subset.name.encode())])
    return subset.keep(sorted(rng.choice(len(subset), size=limit, replace=False).tolist()))


def _image_problem(path: str, how: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        return "image not found"
    if how == "exists":
        return None
    try:
        with Image.open(p) as img:
            if how == "decode":
                img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image ({type(exc).__name__})"
    return None


def find_bad_rows(subset: Subset, hard_negatives: bool, check_images: str,
                  checked: dict[str, str | None]) -> list[dict[str, Any]]:
    """Rows with an empty text or a missing/unreadable image, one record per row."""
    sides: list[tuple[str, list[str], list[str | None]]] = [
        ("query", subset.qry, subset.qry_image), ("target", subset.pos, subset.pos_image)]
    paths = {p for _, _, imgs in sides for p in imgs if p}
    if hard_negatives and subset.neg is not None and subset.neg_image is not None:
        paths |= {p for p in subset.neg_image if p}
    todo = sorted(p for p in paths if p not in checked)
    with ThreadPoolExecutor(max_workers=8) as pool:  # file system latency, not CPU
        problems = pool.map(lambda p: _image_problem(p, check_images), todo)
        for path, problem in zip(todo, problems, strict=True):
            checked[path] = problem
    bad = []
    for i in range(len(subset)):
        reasons = []
        row_sides = list(sides)
        if hard_negatives and subset.has_negative(i):
            assert subset.neg is not None
            assert subset.neg_image is not None
            row_sides.append(("negative", subset.neg, subset.neg_image))
        for side, texts, images in row_sides:
            if not texts[i].strip():
                reasons.append(f"empty {side} text")
            image = images[i]
            if image and checked.get(image):
                reasons.append(f"{side} {checked[image]}: {image}")
        if reasons:
            bad.append({"subset": subset.name, "row": subset.rows[i], "reasons": reasons,
                        "index": i})
    return bad


def load_train_data(
    *, data: str, subsets: Sequence[str], split: str, image_dir: str | None,
    max_per_subset: int, subset_sampling: str, seed: int, hard_negatives: bool,
    check_images: str, skip_bad_rows: bool, hub_revision: str | None = None,
    bad_rows_file: Path | None = None,
) -> TrainData:
    """Read, cap and check every subset; bad rows stop here (before step 0) unless skipped."""
    read, source = read_subsets(data, subsets, split, image_dir, hub_revision)
    kept: list[Subset] = []
    bad_all: list[dict[str, Any]] = []
    checked: dict[str, str | None] = {}
    for subset in read:
        subset = cap(subset, max_per_subset, subset_sampling, seed)
        bad = find_bad_rows(subset, hard_negatives, check_images, checked)
        bad_all.extend(bad)
        if bad and skip_bad_rows:
            drop = {b["index"] for b in bad}
            subset = subset.keep([i for i in range(len(subset)) if i not in drop])
        if len(subset) == 0:
            raise DataError(f"{subset.name}: no usable rows (check the data and image_dir)")
        kept.append(subset)
    for b in bad_all:
        b.pop("index")
    if bad_all:
        _report_bad_rows(bad_all, skip_bad_rows, bad_rows_file)
    return TrainData(kept, hard_negatives, bad_all, source)


def _report_bad_rows(bad: list[dict[str, Any]], skipped: bool, file: Path | None) -> None:
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("".join(json.dumps(b) + "\n" for b in bad))
    per_subset = Counter(b["subset"] for b in bad)
    summary = ", ".join(f"{name} {n}" for name, n in per_subset.most_common())
    for b in bad[:NAMED_IN_LOG]:
        log.warning("bad row: %s row %d: %s", b["subset"], b["row"], "; ".join(b["reasons"]))
    where = f" (all listed in {file})" if file is not None else ""
    if skipped:
        log.warning("skipped %d bad rows: %s%s", len(bad), summary, where)
        return
    first = bad[0]
    raise DataError(
        f"{len(bad)} bad training rows ({summary}), e.g. {first['subset']} row {first['row']}: "
        f"{first['reasons'][0]}; fix the data or pass --skip_bad_rows true to skip them{where}")


# -- order ----------------------------------------------------------------------------------


class PairStream:
    """Which pair sits at each position of the training stream: a pure function of the seed.

    Without weights: one seeded shuffle of all pairs per epoch (the original's random sampler
    over the concatenated subsets). With weights: each position draws a subset with the given
    probabilities, and takes that subset's next pair from its own per-epoch shuffle.
    """

    BLOCK = 4096

    def __init__(self, sizes: Sequence[int], seed: int, weights: Sequence[float] | None = None
                 ) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.seed = seed
        self.weights: np.ndarray | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.sum() <= 0:
                raise DataError("subset_weights: at least one weight must be > 0")
            self.weights = w / w.sum()
        self._perms: dict[tuple[int, ...], np.ndarray] = {}
        self._counts: list[np.ndarray] = [np.zeros(len(self.sizes), dtype=np.int64)]
        self._block: tuple[int, np.ndarray] = (-1, np.zeros(0, dtype=np.int64))

    def _perm(self, key: tuple[int, ...], n: int) -> np.ndarray:
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, *key]).permutation(n)
        return self._perms[key]

    def _choices(self, block: int) -> np.ndarray:
        assert self.weights is not None
        if self._block[0] != block:  # consecutive positions share their block's draws
            rng = np.random.default_rng([self.seed, 1, block])
            self._block = (block, rng.choice(len(self.sizes), size=self.BLOCK, p=self.weights))
        return self._block[1]

    def _counts_before(self, block: int) -> np.ndarray:
        while len(self._counts) <= block:
            b = len(self._counts) - 1
            step = np.bincount(self._choices(b), minlength=len(self.sizes))
            self._counts.append(self._counts[-1] + step)
        return self._counts[block]

    def at(self, start: int, count: int) -> list[tuple[int, int]]:
        """(subset, row) of positions ``start .. start + count - 1``."""
        return [self._one(p) for p in range(start, start + count)]

    def _one(self, position: int) -> tuple[int, int]:
        if self.weights is None:
            total = int(self.offsets[-1])
            epoch, offset = divmod(position, total)
            flat = int(self._perm((0, epoch), total)[offset])
            subset = int(np.searchsorted(self.offsets, flat, side="right") - 1)
            return subset, flat - int(self.offsets[subset])
        block, offset = divmod(position, self.BLOCK)
        counts = self._counts_before(block)  # may draw the earlier blocks first
        choices = self._choices(block)
        subset = int(choices[offset])
        k = int(counts[subset] + np.count_nonzero(choices[:offset] == subset))
        n = int(self.sizes[subset])
        epoch, i = divmod(k, n)
        return subset, int(self._perm((2, subset, epoch), n)[i])


class SubsetBatchStream(PairStream):
    """Every global batch from one subset: batch ``b`` draws its subset with the weights (or in
    proportion to the subsets' sizes) and takes that subset's next ``batch`` pairs from its
    own per-epoch shuffle. In-batch negatives are then pairs of the same task, as the eval's
    candidate lists are. A pure function of the seed, like :class:`PairStream`."""

    def __init__(self, sizes: Sequence[int], seed: int, batch: int,
                 weights: Sequence[float] | None = None) -> None:
        super().__init__(sizes, seed, weights if weights is not None else sizes)
        self.batch = batch

    def _one(self, position: int) -> tuple[int, int]:
        number, offset = divmod(position, self.batch)
        # Batch numbers play the part of PairStream's positions: subset draws and the count of
        # earlier batches of the same subset.
        block, index = divmod(number, self.BLOCK)
        counts = self._counts_before(block)
        choices = self._choices(block)
        subset = int(choices[index])
        earlier = int(counts[subset] + np.count_nonzero(choices[:index] == subset))
        n = int(self.sizes[subset])
        epoch, i = divmod(earlier * self.batch + offset, n)
        return subset, int(self._perm((3, subset, epoch), n)[i])


def stream_for(data: TrainData, seed: int, subset_weights: dict[str, float],
               batch_by_subset: int = 0) -> PairStream:
    """The stream of pairs; ``batch_by_subset`` (the global batch size, or 0) makes every
    global batch come from one subset."""
    weights = None
    if subset_weights:
        weights = _weights(data, subset_weights)
    if batch_by_subset:
        return SubsetBatchStream(data.sizes, seed, batch_by_subset, weights)
    return PairStream(data.sizes, seed, weights)


def _weights(data: TrainData, subset_weights: dict[str, float]) -> list[float]:
    names = [s.name for s in data.subsets]
    unknown = sorted(set(subset_weights) - set(names))
    if unknown:
        raise DataError(f"subset_weights: unknown subset(s) {', '.join(unknown)}; training "
                        f"subsets: {', '.join(names)}")
    missing = [n for n in names if n not in subset_weights]
    if missing:
        raise DataError(f"subset_weights: no weight for {', '.join(missing)}; give every "
                        "training subset a weight (0 leaves it out)")
    return [subset_weights[n] for n in names]


def batch_pairs(data: TrainData, stream: PairStream, step: int, global_batch: int,
                rank: int, world: int) -> list[Pair]:
    """This process's share of step ``step``'s global batch (the same pairs on any world)."""
    per = global_batch // world
    start = step * global_batch + rank * per
    return [data.pair(i) for i in stream.at(start, per)]

