"""The latent world behind every sample image, and the English derived from it.

An object is (cell, size, colour, shape) on a 3x3 grid; a scene is a set of objects in distinct
cells. Texts (class names, captions, questions, answers, edits, referring expressions) are
functions of these attributes only, and every latent has a string key: two items with the same
key are interchangeable for the task, two with different keys are not. The nuisance factors of a
picture (background, jitter, brightness) are deliberately not part of any key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mmeb.sample.draw import SHAPE_NAMES
from mmeb.sample.rng import Rng

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SHAPES = SHAPE_NAMES
SIZES = ("small", "large")
POSITIONS = (
    "top left", "top middle", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
)
PLURALS = {"cross": "crosses"}
NUMBERS = ("zero", "one", "two", "three", "four", "five")
ATTRIBUTES = ("colour", "shape", "size", "cell")


def plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


@dataclass(frozen=True, order=True)
class Obj:
    cell: int
    size: str
    colour: str
    shape: str

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def key(self) -> str:
        return f"{self.size} {self.colour} {self.shape}@{self.cell}"

    def describe(self) -> str:
        """``large red circle at the top left``: every attribute, no article."""
        return f"{self.size} {self.colour} {self.shape} at the {self.position}"

    def changed(self, attribute: str, value: str | int) -> Obj:
        if attribute == "cell":
            return replace(self, cell=int(value))
        if attribute == "size":
            return replace(self, size=str(value))
        if attribute == "colour":
            return replace(self, colour=str(value))
        if attribute == "shape":
            return replace(self, shape=str(value))
        raise ValueError(f"objects have no attribute {attribute!r}")


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]  # sorted by cell, one object per cell

    @staticmethod
    def of(objects: list[Obj] | tuple[Obj, ...]) -> Scene:
        ordered = tuple(sorted(objects))
        cells = [o.cell for o in ordered]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell: {ordered}")
        return Scene(ordered)

    @property
    def key(self) -> str:
        return ";".join(o.key for o in self.objects)

    @property
    def free_cells(self) -> list[int]:
        used = {o.cell for o in self.objects}
        return [c for c in range(len(POSITIONS)) if c not in used]

    def caption(self) -> str:
        """A caption that names every attribute of every object (reading order)."""
        phrases = [f"a {o.describe()}" for o in self.objects]
        text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        return text[0].upper() + text[1:] + "."

    def replace_object(self, old: Obj, new: Obj | None) -> Scene:
        rest = [o for o in self.objects if o != old]
        return Scene.of(rest if new is None else [*rest, new])

    def count(self, **attrs: str) -> int:
        return sum(all(getattr(o, k) == v for k, v in attrs.items()) for o in self.objects)

    def unique(self, **attrs: str) -> bool:
        return self.count(**attrs) == 1


def random_obj(rng: Rng, cell: int) -> Obj:
    return Obj(cell, rng.choice(SIZES), rng.choice(COLOURS), rng.choice(SHAPES))


def random_scene(rng: Rng, count: int, *, distinct_labels: bool = False) -> Scene:
    """``count`` objects in random cells; ``distinct_labels`` makes every colour+shape unique."""
    cells = sorted(rng.sample(range(len(POSITIONS)), count))
    objects: list[Obj] = []
    for cell in cells:
        obj = random_obj(rng, cell)
        while distinct_labels and any(o.label == obj.label for o in objects):
            obj = random_obj(rng, cell)
        objects.append(obj)
    return Scene.of(objects)


def changed_obj(rng: Rng, obj: Obj, attribute: str, scene: Scene | None = None) -> Obj:
    """``obj`` with one attribute set to another value (another free cell for ``cell``)."""
    if attribute == "cell":
        if scene is None:
            choices = [c for c in range(len(POSITIONS)) if c != obj.cell]
        else:
            choices = scene.free_cells
        return obj.changed("cell", rng.choice(choices))
    values = {"colour": COLOURS, "shape": SHAPES, "size": SIZES}[attribute]
    return obj.changed(attribute, rng.choice([v for v in values if v != getattr(obj, attribute)]))


def scene_variants(rng: Rng, scene: Scene, count: int) -> list[Scene]:
    """Up to ``count`` distinct scenes that each differ from ``scene`` in one attribute."""
    out: dict[str, Scene] = {}
    attempts = 0
    while len(out) < count and attempts < 20 * count:
        attempts += 1
        obj = rng.choice(scene.objects)
        attribute = rng.choice(ATTRIBUTES)
        if attribute == "cell" and not scene.free_cells:
            continue
        variant = scene.replace_object(obj, changed_obj(rng, obj, attribute, scene))
        if variant.key != scene.key:
            out.setdefault(variant.key, variant)
    return list(out.values())


# -- words ---------------------------------------------------------------------------------

REAL_WORDS = (
    "CAT", "DOG", "SUN", "MOON", "STAR", "TREE", "FISH", "BIRD",
    "BOOK", "LAMP", "KEY", "DOOR", "SHIP", "CAR", "BUS", "TRAIN",
    "APPLE", "PEAR", "LIME", "PLUM", "ROSE", "LEAF", "ROCK", "SAND",
    "SNOW", "RAIN", "WIND", "FIRE", "GOLD", "SALT", "MILK", "TEA",
    "CAKE", "BREAD", "CORN", "RICE", "BEAN", "EGG", "HAT", "SHOE",
    "SOCK", "COAT", "BELL", "DRUM", "HORN", "HARP", "KITE", "BALL",
    "RING", "COIN", "MAP", "PEN", "CUP", "BOWL", "FORK", "BOAT",
    "ROAD", "HILL", "LAKE", "POND", "FROG", "BEAR", "WOLF", "OWL",
)
_CONSONANTS = "BDFGKLMNPRSTVZ"
_VOWELS = "AEIOU"


def word_vocab(n: int) -> list[str]:
    """``n`` distinct upper-case words: real ones first, then pronounceable made-up ones."""
    words = list(REAL_WORDS[:n])
    if n > len(words):
        syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
        taken = set(REAL_WORDS)
        made_up = [a + b for a in syllables for b in syllables if a + b not in taken]
        if n - len(words) > len(made_up):
            raise ValueError(f"at most {len(REAL_WORDS) + len(made_up)} words, asked for {n}")
        words += Rng("made-up words").sample(made_up, n - len(words))
    return words


def word_neighbours(vocab: list[str]) -> dict[str, list[str]]:
    """For each word, the other words of the same length at the smallest letter distance."""
    out: dict[str, list[str]] = {}
    for word in vocab:
        best: list[str] = []
        best_distance = len(word) + 1
        for other in vocab:
            if other == word or len(other) != len(word):
                continue
            distance = sum(a != b for a, b in zip(word, other, strict=True))
            if distance < best_distance:
                best, best_distance = [other], distance
            elif distance == best_distance:
                best.append(other)
        out[word] = best or [w for w in vocab if w != word]
    return out
