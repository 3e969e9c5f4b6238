"""What a dataset generator fills in: image files, eval rows with their latent keys, train rows.

A generator never formats a row itself: it hands texts and pictures to a :class:`Job`, which
builds the raw strings with :func:`mmeb.instructions.compose` and enforces the row invariants
(gold first, distinct contents, distinct latents) that make the sample tasks well posed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmeb.instructions import compose
from mmeb.sample.draw import jpeg_bytes
from mmeb.sample.rng import Rng
from mmeb.tasks import TaskSpec


@dataclass(frozen=True)
class Profile:
    """Sizes that depend on the scale, not on the task."""

    eval_px: int  # side of eval scene pictures
    train_px: int  # side of train pictures
    train_pairs: int  # rows per train file (tasks that have one)
    hard_negatives: int  # one-attribute-off candidates per eval query, where a task makes them


@dataclass(frozen=True)
class Cand:
    """One candidate: its raw ``tgt_text``, its ``tgt_img_path`` ("" if none) and latent key."""

    text: str
    image: str
    key: str

    @property
    def content(self) -> tuple[str, str]:
        return self.text, self.image


class ImageSink:
    """Writes JPEGs under ``base / prefix`` and remembers each file's sha256."""

    def __init__(self, base: Path, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        self.digests: dict[str, str] = {}  # path relative to ``base`` -> sha256
        (base / prefix).mkdir(parents=True, exist_ok=True)

    def put(self, name: str, pixels: np.ndarray) -> str:
        rel = f"{self.prefix}/{name}.jpg"
        if rel in self.digests:
            raise ValueError(f"image {rel} written twice")
        data = jpeg_bytes(pixels)
        (self.base / rel).write_bytes(data)
        self.digests[rel] = hashlib.sha256(data).hexdigest()
        return rel


@dataclass
class EvalRow:
    qry_text: str
    qry_img_path: str
    tgt_text: list[str]
    tgt_img_path: list[str]
    qry_key: str
    tgt_keys: list[str]


@dataclass
class TrainRow:
    qry: str
    qry_image_path: str
    pos_text: str
    pos_image_path: str
    neg_text: str
    neg_image_path: str


@dataclass
class Job:
    """One task being generated."""

    spec: TaskSpec
    profile: Profile
    rng: Rng
    eval_images: ImageSink
    train_images: ImageSink | None
    eval_rows: list[EvalRow] = field(default_factory=list)
    train_rows: list[TrainRow] = field(default_factory=list)

    # -- sizes ----------------------------------------------------------------------------

    @property
    def num_queries(self) -> int:
        return self.spec.num_queries

    @property
    def num_candidates(self) -> int:
        return self.spec.num_candidates

    @property
    def train_pairs(self) -> int:
        return self.profile.train_pairs if self.train_images is not None else 0

    def px(self, train: bool) -> int:
        return self.profile.train_px if train else self.profile.eval_px

    def put(
        self, name: str, pixels: np.ndarray, *, train: bool = False, candidate: bool = False
    ) -> str:
        """Write a picture of the eval or train side; returns the path the rows use.

        A ``candidate`` picture gets an opaque file name derived from ``name``, so that no
        path tells the gold (or the positive) from a negative.
        """
        sink = self.train_images if train else self.eval_images
        if sink is None:
            raise ValueError(f"{self.spec.name} has no training data")
        if candidate:
            name = "c" + hashlib.sha256(f"{self.spec.name}/{name}".encode()).hexdigest()[:15]
        return sink.put(name, pixels)

    # -- raw strings ----------------------------------------------------------------------

    def query(self, text: str, *, image: bool, train: bool = False) -> str:
        instruction = self.spec.train_query_instruction if train else self.spec.query_instruction
        return compose(instruction, text, has_image=image)

    def target(self, text: str, *, image: bool) -> str:
        """A candidate string: bare text, or the target instruction plus optional text."""
        return compose(self.spec.target_instruction, text, has_image=image)

    def text_cand(self, text: str, key: str) -> Cand:
        return Cand(self.target(text, image=False), "", key)

    def image_cand(self, image: str, key: str, text: str = "") -> Cand:
        return Cand(self.target(text, image=True), image, key)

    # -- rows -----------------------------------------------------------------------------

    def add_eval(self, query_text: str, query_image: str, candidates: Sequence[Cand]) -> None:
        gold = candidates[0]
        keys = [c.key for c in candidates]
        contents = {c.content for c in candidates}
        if len(set(keys)) != len(keys) or len(contents) != len(candidates):
            raise ValueError(f"{self.spec.name}: candidates repeat a latent or a content")
        if len(candidates) != self.num_candidates:
            raise ValueError(f"{self.spec.name}: {len(candidates)} candidates, "
                             f"expected {self.num_candidates}")
        self.eval_rows.append(EvalRow(
            qry_text=query_text,
            qry_img_path=query_image,
            tgt_text=[c.text for c in candidates],
            tgt_img_path=[c.image for c in candidates],
            qry_key=gold.key,
            tgt_keys=keys,
        ))

    def add_train(self, query_text: str, query_image: str, pos: Cand, neg: Cand) -> None:
        if pos.key == neg.key:
            raise ValueError(f"{self.spec.name}: train negative equals the positive")
        self.train_rows.append(TrainRow(query_text, query_image, pos.text, pos.image,
                                        neg.text, neg.image))

    def assemble(
        self,
        gold: Cand,
        hard: Sequence[Cand],
        pool: Sequence[Cand],
        accept: Callable[[Cand], bool] | None = None,
    ) -> list[Cand]:
        """Gold first, then the hard negatives and random pool entries in random order.

        Entries whose key or content repeats one already chosen are skipped, and so are those
        ``accept`` rejects (e.g. a crop from another picture that the expression also fits).
        """
        n = self.num_candidates
        chosen = [gold]
        keys, contents = {gold.key}, {gold.content}

        def take(cand: Cand) -> None:
            if cand.key in keys or cand.content in contents or (accept and not accept(cand)):
                return
            chosen.append(cand)
            keys.add(cand.key)
            contents.add(cand.content)

        for cand in hard:
            if len(chosen) < n:
                take(cand)
        if len(pool) <= 4 * n:  # small pools: one pass over a shuffled copy
            for cand in self.rng.shuffled(pool):
                if len(chosen) == n:
                    break
                take(cand)
        else:  # large pools: random draws, rejecting repeats
            draws = 0
            while len(chosen) < n and draws < 50 * n:
                take(pool[self.rng.below(len(pool))])
                draws += 1
        if len(chosen) < n:
            raise ValueError(f"{self.spec.name}: only {len(chosen)} distinct candidates for "
                             f"{n} slots; the candidate pool is too small")
        return [gold, *self.rng.shuffled(chosen[1:])]
