"""Drawing primitives: an RGB canvas, filled shapes, a built-in bitmap font, JPEG bytes.

Every pixel decision is exact integer arithmetic on numpy arrays, and text uses a 5x7 font
defined here, so the pixels never depend on Pillow's rasteriser, on FreeType or on the fonts a
machine happens to have. Pillow only encodes the finished pixels as JPEG (baseline, fixed
quality, no optimisation pass), which libjpeg(-turbo) does deterministically.
"""

from __future__ import annotations

import io
from functools import cache, lru_cache

import numpy as np

Colour = tuple[int, int, int]

JPEG_QUALITY = 90

# Shape outlines as vertex tables in eighths of the radius (x right, y down). Radii are small
# integers, so the vertices scaled by r stay integers and the inside test is exact.
_CONVEX: dict[str, tuple[tuple[tuple[int, int], ...], ...]] = {
    "triangle": (((0, -8), (8, 6), (-8, 6)),),
    "square": (((-7, -7), (7, -7), (7, 7), (-7, 7)),),
    "diamond": (((0, -9), (9, 0), (0, 9), (-9, 0)),),
    "hexagon": (((-8, 0), (-4, -7), (4, -7), (8, 0), (4, 7), (-4, 7)),),
    # A six-pointed star is the union of two opposite triangles.
    "star": (((0, -9), (8, 5), (-8, 5)), ((0, 9), (8, -5), (-8, -5))),
    # A cross is the union of a tall and a wide bar.
    "cross": (((-3, -9), (3, -9), (3, 9), (-3, 9)), ((-9, -3), (9, -3), (9, 3), (-9, 3))),
}
ROUND_SHAPES = ("circle", "ring")
SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross", "star", "hexagon", "ring")

# Classic 5x7 glyphs, one 5-bit row per entry (most significant bit = leftmost pixel).
_FONT: dict[str, tuple[int, ...]] = {
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0E),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04),
    "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
}
GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7


def text_size(word: str, scale: int) -> tuple[int, int]:
    """Width and height in pixels of ``word`` drawn at ``scale`` (one blank column between)."""
    return ((GLYPH_WIDTH + 1) * len(word) - 1) * scale, GLYPH_HEIGHT * scale


@lru_cache(maxsize=4096)
def _word_bitmap(word: str, scale: int) -> np.ndarray:
    width = (GLYPH_WIDTH + 1) * len(word) - 1
    bitmap = np.zeros((GLYPH_HEIGHT, width), dtype=bool)
    for i, letter in enumerate(word):
        rows = _FONT[letter]  # KeyError on an unsupported letter: the vocabularies are A-Z only
        for y, bits in enumerate(rows):
            for x in range(GLYPH_WIDTH):
                bitmap[y, i * (GLYPH_WIDTH + 1) + x] = bool(bits >> (GLYPH_WIDTH - 1 - x) & 1)
    if scale > 1:
        bitmap = np.repeat(np.repeat(bitmap, scale, axis=0), scale, axis=1)
    bitmap.setflags(write=False)  # shared between calls through the cache
    return bitmap


def _inside_convex(px: np.ndarray, py: np.ndarray, vertices: list[tuple[int, int]]) -> np.ndarray:
    """Points on or inside a convex polygon (either winding), by exact integer cross products."""
    signs = []
    for (x1, y1), (x2, y2) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
        signs.append((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1))
    stacked = np.stack(signs)
    return np.asarray((stacked >= 0).all(axis=0) | (stacked <= 0).all(axis=0))


@cache
def shape_mask(shape: str, radius: int) -> np.ndarray:
    """Boolean mask of ``shape`` centred in a ``(2r+1, 2r+1)`` box (read-only, cached)."""
    offsets = np.arange(-radius, radius + 1, dtype=np.int64)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    dist2 = dx * dx + dy * dy
    outer = dist2 <= radius * radius + radius  # "+ r" rounds the outline like a midpoint circle
    if shape == "circle":
        mask = outer
    elif shape == "ring":
        mask = outer & (64 * dist2 > 25 * radius * radius)  # hole of 5/8 the radius
    else:
        # Compare 8 * offset with the eighth-unit vertex tables scaled by r: all integers.
        px, py = 8 * dx, 8 * dy
        mask = np.zeros(dx.shape, dtype=bool)
        for polygon in _CONVEX[shape]:
            mask |= _inside_convex(px, py, [(vx * radius, vy * radius) for vx, vy in polygon])
    mask.setflags(write=False)
    return mask


class Canvas:
    """An RGB image as a ``(height, width, 3)`` uint8 array, drawn on in place."""

    def __init__(self, width: int, height: int, background: Colour) -> None:
        self.pixels = np.empty((height, width, 3), dtype=np.uint8)
        self.pixels[:, :] = background

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def _paint(self, mask: np.ndarray, left: int, top: int, colour: Colour) -> None:
        """Paint ``mask`` with its top-left corner at (left, top), clipped to the canvas."""
        h, w = mask.shape
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + w, self.width), min(top + h, self.height)
        if x0 >= x1 or y0 >= y1:
            return
        sub = mask[y0 - top : y1 - top, x0 - left : x1 - left]
        self.pixels[y0:y1, x0:x1][sub] = colour

    def shape(self, shape: str, cx: int, cy: int, radius: int, colour: Colour) -> None:
        self._paint(shape_mask(shape, radius), cx - radius, cy - radius, colour)

    def text(self, word: str, left: int, top: int, scale: int, colour: Colour) -> None:
        self._paint(_word_bitmap(word, scale), left, top, colour)

    def crop(self, left: int, top: int, right: int, bottom: int) -> np.ndarray:
        """A copy of the box, clipped to the canvas (right and bottom exclusive)."""
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(right, self.width), min(bottom, self.height)
        return self.pixels[y0:y1, x0:x1].copy()

    def shift_brightness(self, delta: int) -> None:
        shifted = self.pixels.astype(np.int16) + delta
        self.pixels = np.clip(shifted, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    """Encode pixels as a baseline JPEG with fixed settings (same bytes for the same pixels)."""
    from PIL import Image

    buffer = io.BytesIO()
    # 4:4:4 keeps thin coloured strokes (small shapes, 1-pixel letters) their true colour.
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False,
        progressive=False,
    )
    return buffer.getvalue()
