"""Latents to pixels: grid layout, nuisance factors (background, jitter, brightness), crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmeb.sample.draw import Canvas, Colour, text_size
from mmeb.sample.rng import Rng
from mmeb.sample.world import Obj, Scene

RGB: dict[str, Colour] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 210, 30),
    "green": (40, 165, 60),
    "cyan": (40, 195, 215),
    "blue": (40, 75, 215),
    "purple": (135, 55, 195),
    "pink": (245, 120, 185),
}
# Pale backgrounds: every object colour stays clearly visible on each of them.
BACKGROUNDS: tuple[Colour, ...] = ((246, 246, 246), (226, 226, 226), (242, 234, 216),
                                   (224, 234, 246))
GRID = 3
#: Pixel margin kept around an object when it is cropped out of its scene.
CROP_MARGIN = 2


@dataclass(frozen=True)
class Layout:
    """Where the cells of a ``size`` x ``size`` picture are and how big objects are in them."""

    size: int

    @property
    def cell(self) -> int:
        return self.size // GRID

    def centre(self, cell: int) -> tuple[int, int]:
        margin = (self.size - GRID * self.cell) // 2
        row, col = divmod(cell, GRID)
        return margin + col * self.cell + self.cell // 2, margin + row * self.cell + self.cell // 2

    def radius(self, size: str) -> int:
        return max(3, self.cell * 5 // 12) if size == "large" else max(2, self.cell // 4)

    def jitter(self, size: str) -> int:
        """How far an object may drift from its cell centre without leaving the cell."""
        return max(0, min(self.cell // 2 - self.radius(size) - 1, self.cell // 8))


@dataclass(frozen=True)
class Placed:
    obj: Obj
    cx: int
    cy: int
    radius: int

    def box(self, margin: int = CROP_MARGIN) -> tuple[int, int, int, int]:
        r = self.radius + margin
        return self.cx - r, self.cy - r, self.cx + r + 1, self.cy + r + 1


@dataclass
class Picture:
    canvas: Canvas
    placed: list[Placed]

    @property
    def pixels(self) -> np.ndarray:
        return self.canvas.pixels

    def crop(self, obj: Obj) -> np.ndarray:
        for p in self.placed:
            if p.obj == obj:
                return self.canvas.crop(*p.box())
        raise KeyError(f"{obj} is not in this picture")


def render_scene(
    scene: Scene,
    size: int,
    rng: Rng,
    *,
    background: Colour | None = None,
    brightness: int = 0,
) -> Picture:
    """Draw ``scene``; background and jitter come from ``rng`` unless given."""
    layout = Layout(size)
    canvas = Canvas(size, size, background or rng.choice(BACKGROUNDS))
    placed = []
    for obj in scene.objects:
        cx, cy = layout.centre(obj.cell)
        j = layout.jitter(obj.size)
        cx, cy = cx + rng.between(-j, j), cy + rng.between(-j, j)
        radius = layout.radius(obj.size)
        canvas.shape(obj.shape, cx, cy, radius, RGB[obj.colour])
        placed.append(Placed(obj, cx, cy, radius))
    if brightness:
        canvas.shift_brightness(brightness)
    return Picture(canvas, placed)


def word_scale(size: int) -> int:
    return max(1, size // 48)


def render_words(
    words: list[tuple[str, str, int]], size: int, rng: Rng, *, rows: int = 3
) -> np.ndarray:
    """Draw ``(word, colour, row)`` triples, one word per horizontal band, at random x."""
    canvas = Canvas(size, size, rng.choice(BACKGROUNDS))
    scale = word_scale(size)
    band = size // rows
    for word, colour, row in words:
        width, height = text_size(word, scale)
        left = rng.between(1, max(1, size - width - 1))
        top = row * band + (band - height) // 2 + rng.between(-scale, scale)
        canvas.text(word, left, top, scale, RGB[colour])
    return canvas.pixels


def render_word(word: str, colour: str, size: int, rng: Rng) -> np.ndarray:
    """One word anywhere in the picture."""
    canvas = Canvas(size, size, rng.choice(BACKGROUNDS))
    scale = word_scale(size)
    width, height = text_size(word, scale)
    left = rng.between(1, max(1, size - width - 1))
    top = rng.between(1, max(1, size - height - 1))
    canvas.text(word, left, top, scale, RGB[colour])
    return canvas.pixels


def render_single(obj: Obj, size: int, rng: Rng) -> np.ndarray:
    """One object filling the picture (a card or a close-up); ``obj.cell`` is ignored."""
    canvas = Canvas(size, size, rng.choice(BACKGROUNDS))
    radius = size * 3 // 8 if obj.size == "large" else size // 5
    j = size // 16
    centre = size // 2
    canvas.shape(obj.shape, centre + rng.between(-j, j), centre + rng.between(-j, j), radius,
                 RGB[obj.colour])
    return canvas.pixels
