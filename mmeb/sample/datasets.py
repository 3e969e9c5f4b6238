"""One generator per kind of sample dataset, each mirroring an MMEB dataset family.

Every generator draws latents, derives the texts from them, renders the pictures and hands
rows to the :class:`~mmeb.sample.job.Job`. Hard negatives differ from the gold in exactly one
attribute; random negatives come from the task's own pool of candidates, as in MMEB, where a
dataset's candidates are drawn from the answers, captions or pictures of its other queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product

import numpy as np

from mmeb.sample.draw import Colour
from mmeb.sample.job import Cand, Job
from mmeb.sample.render import BACKGROUNDS, render_scene, render_single, render_word, render_words
from mmeb.sample.rng import Rng
from mmeb.sample.world import (
    COLOURS,
    NUMBERS,
    POSITIONS,
    REAL_WORDS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    changed_obj,
    plural,
    random_scene,
    scene_variants,
    word_neighbours,
    word_vocab,
)

Builder = Callable[[Job], None]
BUILDERS: dict[str, Builder] = {}


def builder(kind: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        BUILDERS[kind] = fn
        return fn

    return register


def unique_scenes(
    rng: Rng, low: int, high: int, *, distinct_labels: bool = False
) -> Iterator[Scene]:
    """Endless scenes of ``low..high`` objects, never the same latent scene twice."""
    seen: set[str] = set()
    while True:
        scene = random_scene(rng, rng.between(low, high), distinct_labels=distinct_labels)
        if scene.key not in seen:
            seen.add(scene.key)
            yield scene


def scene_key(scene: Scene) -> str:
    return f"scene:{scene.key}"


# -- classification -------------------------------------------------------------------------

_CLASS_ATTRIBUTES = (("colour", "shape"), ("size", "colour", "shape"),
                     ("cell", "size", "colour", "shape"))


def shape_classes(rng: Rng, n: int) -> list[Obj]:
    """``n`` class prototypes over the fewest attributes that give enough classes.

    64 colour+shape classes, then 128 with the size, then 1152 with the position. Attributes
    that are not part of the class are left at a placeholder and drawn per picture.
    """
    for attributes in _CLASS_ATTRIBUTES:
        combos = [Obj(cell, size, colour, shape)
                  for cell in (range(len(POSITIONS)) if "cell" in attributes else (-1,))
                  for size in (SIZES if "size" in attributes else ("",))
                  for colour in COLOURS for shape in SHAPES]
        if len(combos) >= n:
            return combos if len(combos) == n else rng.sample(combos, n)
    raise ValueError(f"at most {len(combos)} shape classes, asked for {n}")


def class_label(proto: Obj) -> str:
    label = f"{proto.size} {proto.label}" if proto.size else proto.label
    return f"{label} at the {proto.position}" if proto.cell >= 0 else label


def _one_apart(a: Obj, b: Obj) -> bool:
    return sum(x != y for x, y in zip((a.cell, a.size, a.colour, a.shape),
                                      (b.cell, b.size, b.colour, b.shape), strict=True)) == 1


@builder("shapes")
def build_shapes(job: Job) -> None:
    """ImageNet/VOC-like: one object per picture; its class name among all class names."""
    rng = job.rng
    classes = shape_classes(rng.child("classes"), job.num_candidates)
    cands = [job.text_cand(class_label(p), f"class:{class_label(p)}") for p in classes]
    neighbours = [[j for j, q in enumerate(classes) if _one_apart(p, q)]
                  or [j for j in range(len(classes)) if j != i] for i, p in enumerate(classes)]

    def picture(proto: Obj, train: bool) -> np.ndarray:
        obj = Obj(proto.cell if proto.cell >= 0 else rng.below(len(POSITIONS)),
                  proto.size or rng.choice(SIZES), proto.colour, proto.shape)
        return render_scene(Scene.of([obj]), job.px(train), rng).pixels

    for i in range(job.num_queries):
        c = rng.below(len(classes))
        image = job.put(f"q_{i:05d}", picture(classes[c], False))
        job.add_eval(job.query("", image=True), image, job.assemble(cands[c], [], cands))
    for i in range(job.train_pairs):
        c = rng.below(len(classes))
        image = job.put(f"t_{i:05d}", picture(classes[c], True), train=True)
        job.add_train(job.query("", image=True, train=True), image, cands[c],
                      cands[rng.choice(neighbours[c])])


@builder("words")
def build_words(job: Job) -> None:
    """OCR classification: one rendered word per picture; the word among the vocabulary."""
    rng = job.rng
    vocab = word_vocab(job.num_candidates)
    neighbours = word_neighbours(vocab)
    cands = {w: job.text_cand(w, f"word:{w}") for w in vocab}
    pool = list(cands.values())
    for train in (False, True):
        for i in range(job.train_pairs if train else job.num_queries):
            word = rng.choice(vocab)
            pixels = render_word(word, rng.choice(COLOURS), job.px(train), rng)
            image = job.put(f"{'t' if train else 'q'}_{i:05d}", pixels, train=train)
            query = job.query("", image=True, train=train)
            if train:
                job.add_train(query, image, cands[word], cands[rng.choice(neighbours[word])])
            else:
                job.add_eval(query, image, job.assemble(cands[word], [], pool))


# -- visual question answering --------------------------------------------------------------


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    wrong: tuple[str, ...]  # answers one attribute off, for hard negatives


def shape_questions(rng: Rng, scene: Scene) -> list[QA]:
    """Every question template that has exactly one right answer in ``scene``."""
    qas: list[QA] = []
    for shape in SHAPES:
        if scene.unique(shape=shape):
            obj = next(o for o in scene.objects if o.shape == shape)
            qas.append(QA(f"What colour is the {shape}?", obj.colour,
                          tuple(c for c in COLOURS if c != obj.colour)))
    for colour in COLOURS:
        if scene.unique(colour=colour):
            obj = next(o for o in scene.objects if o.colour == colour)
            qas.append(QA(f"What shape is the {colour} object?", obj.shape,
                          tuple(s for s in SHAPES if s != obj.shape)))
    present = [s for s in SHAPES if scene.count(shape=s)]
    absent = [s for s in SHAPES if s not in present]
    for shape in [*present, rng.choice(absent)]:
        answer = NUMBERS[scene.count(shape=shape)]
        qas.append(QA(f"How many {plural(shape)} are there?", answer,
                      tuple(n for n in NUMBERS if n != answer)))
    for obj in scene.objects:
        qas.append(QA(f"What is at the {obj.position}?", f"{obj.size} {obj.label}",
                      tuple(f"{o.size} {o.label}" for o in
                            (changed_obj(rng, obj, a) for a in ("colour", "shape", "size")))))
        if not scene.unique(colour=obj.colour, shape=obj.shape):
            continue
        qas.append(QA(f"Where is the {obj.label}?", obj.position,
                      tuple(p for p in POSITIONS if p != obj.position)))
        qas.append(QA(f"Is the {obj.label} small or large?", obj.size,
                      tuple(s for s in SIZES if s != obj.size)))
        qas.append(QA(f"Describe the {obj.label}.", obj.describe(),
                      tuple(changed_obj(rng, obj, a).describe() for a in ("size", "cell"))))
    return qas


def shape_answers() -> list[str]:
    """Every answer ``shape_questions`` can give: the task's candidate vocabulary (1313)."""
    short = [f"{size} {colour} {shape}" for size, colour, shape in product(SIZES, COLOURS, SHAPES)]
    described = [Obj(cell, size, colour, shape).describe() for cell, size, colour, shape
                 in product(range(len(POSITIONS)), SIZES, COLOURS, SHAPES)]
    return [*COLOURS, *SHAPES, *NUMBERS, *POSITIONS, *SIZES, *short, *described]


Picturer = Callable[[int, bool], tuple[str, list[QA]]]


def _vqa(job: Job, answers: list[str], picture: Picturer, per_image: int = 3) -> None:
    """A few questions per picture (MMEB's VQA sets reuse images), answers from the vocabulary."""
    rng = job.rng
    cands = {a: job.text_cand(a, f"answer:{a}") for a in answers}
    pool = list(cands.values())
    for train in (False, True):
        wanted = job.train_pairs if train else job.num_queries
        rows, index = 0, 0
        while rows < wanted:
            image, qas = picture(index, train)
            index += 1
            for qa in rng.sample(qas, min(per_image, len(qas), wanted - rows)):
                rows += 1
                query = job.query(qa.question, image=True, train=train)
                wrong = rng.sample(qa.wrong, min(job.profile.hard_negatives, len(qa.wrong)))
                hard = [cands[a] for a in wrong]
                if train:
                    job.add_train(query, image, cands[qa.answer], hard[0])
                else:
                    job.add_eval(query, image, job.assemble(cands[qa.answer], hard, pool))


@builder("shape_vqa")
def build_shape_vqa(job: Job) -> None:
    """GQA/Visual7W-like: questions about colours, shapes, counts, positions and sizes."""
    rng = job.rng
    scenes = unique_scenes(rng.child("scenes"), 2, 4)

    def picture(index: int, train: bool) -> tuple[str, list[QA]]:
        scene = next(scenes)
        pixels = render_scene(scene, job.px(train), rng).pixels
        return job.put(f"s_{index:05d}", pixels, train=train), shape_questions(rng, scene)

    _vqa(job, shape_answers(), picture)


ROWS = ("top", "middle", "bottom")
ROW_PHRASES = ("at the top", "in the middle", "at the bottom")
Written = tuple[str, str, int]  # word, colour, row


@builder("word_vqa")
def build_word_vqa(job: Job) -> None:
    """DocVQA/TextVQA-like: coloured words in rows; read a word, name its colour or its row."""
    rng = job.rng
    vocab = word_vocab(max(len(REAL_WORDS), job.num_candidates))
    neighbours = word_neighbours(vocab)

    def questions(words: list[Written]) -> list[QA]:
        qas: list[QA] = []
        for word, colour, row in words:
            similar = tuple([w for w, _, _ in words if w != word] + neighbours[word][:3])
            qas.append(QA(f"What word is written in {colour}?", word, similar))
            qas.append(QA(f"What word is {ROW_PHRASES[row]}?", word, similar))
            qas.append(QA(f"What colour is the word {word}?", colour,
                          tuple(c for c in COLOURS if c != colour)))
            qas.append(QA(f"Where is the word {word}?", ROWS[row],
                          tuple(r for r in ROWS if r != ROWS[row])))
        return qas

    def picture(index: int, train: bool) -> tuple[str, list[QA]]:
        k = rng.between(2, 3)
        words = list(zip(rng.sample(vocab, k), rng.sample(COLOURS, k), rng.sample(range(3), k),
                         strict=True))
        pixels = render_words(words, job.px(train), rng)
        return job.put(f"s_{index:05d}", pixels, train=train), questions(words)

    _vqa(job, [*vocab, *COLOURS, *ROWS], picture)


# -- retrieval ------------------------------------------------------------------------------


@builder("caption_t2i")
def build_caption_t2i(job: Job) -> None:
    """MSCOCO_t2i-like: a caption naming every object; its picture among other pictures."""
    rng = job.rng
    source = unique_scenes(rng.child("scenes"), 2, 3)

    def picture(name: str, scene: Scene, train: bool) -> Cand:
        pixels = render_scene(scene, job.px(train), rng).pixels
        return job.image_cand(job.put(name, pixels, train=train, candidate=True), scene_key(scene))

    scenes = [next(source) for _ in range(job.num_queries)]
    golds = [picture(f"g_{i:05d}", s, False) for i, s in enumerate(scenes)]
    hards = [[picture(f"h_{i:05d}_{k}", v, False)
              for k, v in enumerate(scene_variants(rng, s, job.profile.hard_negatives))]
             for i, s in enumerate(scenes)]
    pool = golds + [c for h in hards for c in h]
    for scene, gold, hard in zip(scenes, golds, hards, strict=True):
        job.add_eval(job.query(scene.caption(), image=False), "", job.assemble(gold, hard, pool))
    for i in range(job.train_pairs):
        scene = next(source)
        variant = scene_variants(rng, scene, 1)[0]
        job.add_train(job.query(scene.caption(), image=False, train=True), "",
                      picture(f"p_{i:05d}", scene, True), picture(f"n_{i:05d}", variant, True))


@builder("caption_i2t")
def build_caption_i2t(job: Job) -> None:
    """MSCOCO_i2t-like: a picture; its caption among captions one attribute off and others."""
    rng = job.rng
    source = unique_scenes(rng.child("scenes"), 2, 3)

    def caption(scene: Scene) -> Cand:
        return job.text_cand(scene.caption(), scene_key(scene))

    def picture(name: str, scene: Scene, train: bool) -> str:
        return job.put(name, render_scene(scene, job.px(train), rng).pixels, train=train)

    scenes = [next(source) for _ in range(job.num_queries)]
    hards = [[caption(v) for v in scene_variants(rng, s, job.profile.hard_negatives)]
             for s in scenes]
    pool = [caption(s) for s in scenes] + [c for h in hards for c in h]
    for i, (scene, hard) in enumerate(zip(scenes, hards, strict=True)):
        job.add_eval(job.query("", image=True), picture(f"q_{i:05d}", scene, False),
                     job.assemble(caption(scene), hard, pool))
    for i in range(job.train_pairs):
        scene = next(source)
        negative = caption(scene_variants(rng, scene, 1)[0])
        job.add_train(job.query("", image=True, train=True), picture(f"t_{i:05d}", scene, True),
                      caption(scene), negative)


@builder("near_dup")
def build_near_dup(job: Job) -> None:
    """NIGHTS-like: the same scene redrawn (jitter, brightness) among one-attribute variants.

    All candidates of a query share its background, so only the latent scene tells the gold
    apart; the brightness shift keeps the gold from being a pixel copy of the query.
    """
    rng = job.rng
    source = unique_scenes(rng.child("scenes"), 2, 4)

    def redraw(name: str, scene: Scene, background: Colour, train: bool) -> Cand:
        shift = rng.choice((-12, -8, 8, 12))
        pixels = render_scene(scene, job.px(train), rng, background=background,
                              brightness=shift).pixels
        return job.image_cand(job.put(name, pixels, train=train, candidate=True), scene_key(scene))

    def first_draw(name: str, scene: Scene, background: Colour, train: bool) -> str:
        pixels = render_scene(scene, job.px(train), rng, background=background).pixels
        return job.put(name, pixels, train=train)

    rows = []
    for i in range(job.num_queries):
        scene, background = next(source), rng.choice(BACKGROUNDS)
        query = first_draw(f"q_{i:05d}", scene, background, False)
        gold = redraw(f"g_{i:05d}", scene, background, False)
        hard = [redraw(f"h_{i:05d}_{k}", v, background, False)
                for k, v in enumerate(scene_variants(rng, scene, job.profile.hard_negatives))]
        rows.append((query, gold, hard))
    pool = [c for _, gold, hard in rows for c in (gold, *hard)]
    for query, gold, hard in rows:
        job.add_eval(job.query("", image=True), query, job.assemble(gold, hard, pool))
    for i in range(job.train_pairs):
        scene, background = next(source), rng.choice(BACKGROUNDS)
        variant = scene_variants(rng, scene, 1)[0]
        job.add_train(job.query("", image=True, train=True),
                      first_draw(f"q_{i:05d}", scene, background, True),
                      redraw(f"p_{i:05d}", scene, background, True),
                      redraw(f"n_{i:05d}", variant, background, True))


@dataclass(frozen=True)
class Edit:
    text: str
    target: Scene
    alternatives: tuple[Scene, ...]  # the same kind of edit with another value


def random_edit(rng: Rng, scene: Scene) -> Edit:
    """A CIRR-style modification text and the scene it describes."""
    unique = [o for o in scene.objects if scene.unique(colour=o.colour, shape=o.shape)]
    lone_shape = [o for o in scene.objects if scene.unique(shape=o.shape)]
    free = scene.free_cells
    while True:
        kind = rng.choice(("recolour", "reshape", "resize", "move", "remove", "add"))
        if kind == "recolour" and lone_shape:
            obj = rng.choice(lone_shape)
            colours = rng.sample([c for c in COLOURS if c != obj.colour], 3)
            scenes = [scene.replace_object(obj, obj.changed("colour", c)) for c in colours]
            return Edit(f"Make the {obj.shape} {colours[0]}.", scenes[0], tuple(scenes[1:]))
        if kind == "reshape" and unique:
            obj = rng.choice(unique)
            shapes = rng.sample([s for s in SHAPES if s != obj.shape], 3)
            scenes = [scene.replace_object(obj, obj.changed("shape", s)) for s in shapes]
            return Edit(f"Turn the {obj.label} into a {shapes[0]}.", scenes[0], tuple(scenes[1:]))
        if kind == "resize" and unique:
            obj = rng.choice(unique)
            flipped = [scene.replace_object(o, o.changed("size", "large" if o.size == "small"
                                                          else "small")) for o in unique]
            word = "larger" if obj.size == "small" else "smaller"
            target = flipped[unique.index(obj)]
            return Edit(f"Make the {obj.label} {word}.", target,
                        tuple(s for s in flipped if s != target))
        if kind == "move" and unique and free:
            obj = rng.choice(unique)
            cells = rng.sample(free, min(3, len(free)))
            scenes = [scene.replace_object(obj, obj.changed("cell", c)) for c in cells]
            return Edit(f"Move the {obj.label} to the {POSITIONS[cells[0]]}.", scenes[0],
                        tuple(scenes[1:]))
        if kind == "remove" and unique and len(scene.objects) >= 2:
            obj = rng.choice(unique)
            others = [scene.replace_object(o, None) for o in unique if o != obj]
            return Edit(f"Remove the {obj.label}.", scene.replace_object(obj, None),
                        tuple(others))
        if kind == "add" and free:
            cell = rng.choice(free)
            new = Obj(cell, rng.choice(SIZES), rng.choice(COLOURS), rng.choice(SHAPES))
            colours = rng.sample([c for c in COLOURS if c != new.colour], 2)
            alternatives = tuple(Scene.of([*scene.objects, new.changed("colour", c)])
                                 for c in colours)
            return Edit(f"Add a {new.size} {new.label} at the {new.position}.",
                        Scene.of([*scene.objects, new]), alternatives)


@builder("edit")
def build_edit(job: Job) -> None:
    """CIRR-like: a picture plus a change; the changed picture among the unchanged one, the
    same change with another value, and other pictures."""
    rng = job.rng
    source = unique_scenes(rng.child("scenes"), 2, 3)

    def picture(name: str, scene: Scene, train: bool) -> Cand:
        pixels = render_scene(scene, job.px(train), rng).pixels
        return job.image_cand(job.put(name, pixels, train=train, candidate=True), scene_key(scene))

    def source_picture(name: str, scene: Scene, train: bool) -> str:
        return job.put(name, render_scene(scene, job.px(train), rng).pixels, train=train)

    rows: list[tuple[str, str, Cand, list[Cand]]] = []
    for i in range(job.num_queries):
        scene = next(source)
        edit = random_edit(rng, scene)
        query = source_picture(f"q_{i:05d}", scene, False)
        near = [scene, *edit.alternatives[:2], *scene_variants(rng, edit.target, 1)]
        hard = [picture(f"h_{i:05d}_{k}", s, False)
                for k, s in enumerate(near[: job.profile.hard_negatives])]
        rows.append((query, edit.text, picture(f"g_{i:05d}", edit.target, False), hard))
    pool = [c for *_, gold, hard in rows for c in (gold, *hard)]
    for query, text, gold, hard in rows:
        job.add_eval(job.query(text, image=True), query, job.assemble(gold, hard, pool))
    for i in range(job.train_pairs):
        scene = next(source)
        edit = random_edit(rng, scene)
        negative = edit.alternatives[0] if edit.alternatives else scene
        job.add_train(job.query(edit.text, image=True, train=True),
                      source_picture(f"q_{i:05d}", scene, True),
                      picture(f"p_{i:05d}", edit.target, True),
                      picture(f"n_{i:05d}", negative, True))


@dataclass(frozen=True)
class Card:
    """A named card showing one object (its size is nuisance, not part of the card)."""

    name: str
    colour: str
    shape: str

    @property
    def key(self) -> str:
        return f"card:{self.name}:{self.colour} {self.shape}"

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def _cards(job: Job, *, image_query: bool) -> None:
    """WebQA/OVEN-like: find the card (picture + name) that fits a name and an object.

    Hard negatives share the name but not the object, or the object but not the name, so
    neither the text nor the picture alone finds the gold.
    """
    rng = job.rng
    names = word_vocab(len(REAL_WORDS))
    neighbours = word_neighbours(names)

    def random_card() -> Card:
        return Card(rng.choice(names), rng.choice(COLOURS), rng.choice(SHAPES))

    def near(card: Card) -> list[Card]:
        return [Card(card.name, rng.choice([c for c in COLOURS if c != card.colour]), card.shape),
                Card(card.name, card.colour, rng.choice([s for s in SHAPES if s != card.shape])),
                Card(rng.choice(neighbours[card.name]), card.colour, card.shape)]

    def drawn(card: Card, train: bool) -> np.ndarray:
        obj = Obj(0, rng.choice(SIZES), card.colour, card.shape)
        return render_single(obj, job.px(train), rng)

    def card_cand(name: str, card: Card, train: bool) -> Cand:
        image = job.put(name, drawn(card, train), train=train, candidate=True)
        return job.image_cand(image, card.key, text=card.name)

    def query(i: int, card: Card, train: bool) -> tuple[str, str]:
        if image_query:
            image = job.put(f"q_{i:05d}", drawn(card, train), train=train)
            return job.query(f"Which {card.name} card shows this object?", image=True,
                             train=train), image
        return job.query(f"Which {card.name} card shows a {card.label}?", image=False,
                         train=train), ""

    seen: set[str] = set()
    rows: list[tuple[tuple[str, str], Cand, list[Cand]]] = []
    while len(rows) < job.num_queries:
        card = random_card()
        if card.key in seen:
            continue
        seen.add(card.key)
        i = len(rows)
        hard = [card_cand(f"h_{i:05d}_{k}", c, False)
                for k, c in enumerate(near(card)[: job.profile.hard_negatives])]
        rows.append((query(i, card, False), card_cand(f"g_{i:05d}", card, False), hard))
    pool = [c for *_, gold, hard in rows for c in (gold, *hard)]
    for (text, image), gold, hard in rows:
        job.add_eval(text, image, job.assemble(gold, hard, pool))
    for i in range(job.train_pairs):
        card = random_card()
        text, image = query(i, card, True)
        job.add_train(text, image, card_cand(f"p_{i:05d}", card, True),
                      card_cand(f"n_{i:05d}", rng.choice(near(card)), True))


@builder("cards_t2it")
def build_cards_t2it(job: Job) -> None:
    _cards(job, image_query=False)


@builder("cards_it2it")
def build_cards_it2it(job: Job) -> None:
    _cards(job, image_query=True)


# -- grounding ------------------------------------------------------------------------------


def refer(rng: Rng, scene: Scene, obj: Obj) -> tuple[str, dict[str, str]]:
    """A referring expression for ``obj`` that fits no other object of the scene, and the
    attributes it names (a crop fits the expression when it has them all)."""
    options = [(f"the {obj.label}", {"colour": obj.colour, "shape": obj.shape})]
    if scene.unique(shape=obj.shape):
        options.append((f"the {obj.shape}", {"shape": obj.shape}))
    if scene.unique(colour=obj.colour):
        options.append((f"the {obj.colour} object", {"colour": obj.colour}))
    return rng.choice(options)


def fits(obj: Obj, attributes: dict[str, str]) -> bool:
    return all(getattr(obj, k) == v for k, v in attributes.items())


def _grounding(job: Job, *, matching: bool, per_scene: int = 2) -> None:
    """MSCOCO/RefCOCO-like: a picture and an expression; the object's crop among the crops of
    the other objects of that picture and of other pictures the expression does not fit.

    With ``matching`` (RefCOCO-Matching) each crop carries a second expression for its object
    (size, shape and position), in the target string as in MMEB.
    """
    rng = job.rng
    scenes = unique_scenes(rng.child("scenes"), 3, 5, distinct_labels=True)
    crop_objects: dict[str, Obj] = {}

    def crops(index: int, scene: Scene, train: bool) -> tuple[str, dict[Obj, Cand]]:
        picture = render_scene(scene, job.px(train), rng)
        image = job.put(f"s_{index:05d}", picture.pixels, train=train)
        out = {}
        for obj in scene.objects:
            path = job.put(f"c_{index:05d}_{obj.cell}", picture.crop(obj), train=train,
                           candidate=True)
            key = f"crop:{'train' if train else 'eval'}:{index}:{obj.cell}"
            second = f'"the {obj.size} {obj.shape} at the {obj.position}"' if matching else ""
            out[obj] = job.image_cand(path, key, text=second)
            crop_objects[key] = obj
        return image, out

    def query(image: str, expression: str, train: bool) -> tuple[str, str]:
        return job.query(f'"{expression}"', image=True, train=train), image

    planned: list[tuple[tuple[str, str], Cand, list[Cand], dict[str, str]]] = []
    index = 0
    while len(planned) < job.num_queries:
        scene = next(scenes)
        image, cands = crops(index, scene, False)
        index += 1
        for obj in rng.sample(scene.objects, min(per_scene, job.num_queries - len(planned))):
            expression, named = refer(rng, scene, obj)
            hard = [c for o, c in cands.items() if o != obj]
            planned.append((query(image, expression, False), cands[obj], hard, named))
    pool = [c for *_, gold, hard, _ in planned for c in (gold, *hard)]
    unique_pool = list({c.key: c for c in pool}.values())
    for (text, image), gold, hard, named in planned:

        def accept(cand: Cand, named: dict[str, str] = named) -> bool:
            return not fits(crop_objects[cand.key], named)

        job.add_eval(text, image, job.assemble(gold, hard, unique_pool, accept))
    rows, index = 0, 0
    while rows < job.train_pairs:
        scene = next(scenes)
        image, cands = crops(index, scene, True)
        index += 1
        for obj in scene.objects[: job.train_pairs - rows]:
            expression, _ = refer(rng, scene, obj)
            negative = cands[rng.choice([o for o in scene.objects if o != obj])]
            job.add_train(*query(image, expression, True), cands[obj], negative)
            rows += 1


@builder("grounding")
def build_grounding(job: Job) -> None:
    _grounding(job, matching=False)


@builder("matching")
def build_matching(job: Job) -> None:
    _grounding(job, matching=True)
