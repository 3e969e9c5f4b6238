"""What an encoder receives: one query or candidate of an MMEB row."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from mmeb.errors import DataError

if TYPE_CHECKING:
    from PIL import Image as PILImage


class Side(str, Enum):
    """Which side of a pair is being encoded. Query and target vectors never mix."""

    QUERY = "query"
    TARGET = "target"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, eq=False)
class Item:
    """One input to encode.

    ``raw`` is the original MMEB string (instruction and ``<|image_1|>`` included, trailing
    newline kept); ``text`` and ``instruction`` are its parsed parts; the image is read from
    ``image_path`` only when an adapter asks for it, so a task never holds all its images.
    """

    raw: str
    text: str
    instruction: str | None = None
    image_path: str | None = None
    origin: str = ""  # where the item comes from, for error messages ("CIRR row 12 query")
    pil_image: Any = field(default=None, repr=False)  # an in-memory image, for ad-hoc use
    decoded: Any = field(default=None, repr=False)  # set by mmeb.prefetch: image read ahead

    @property
    def has_image(self) -> bool:
        return self.image_path is not None or self.pil_image is not None

    @property
    def modality(self) -> str:
        """``text``, ``image`` or ``image+text`` (what the adapter must be able to encode)."""
        if not self.has_image:
            return "text"
        return "image+text" if self.text else "image"

    @property
    def image(self) -> PILImage.Image | None:
        """The image as RGB PIL image, read from disk on each access (None for text items)."""
        if self.decoded is not None:
            return self.decoded
        if self.pil_image is not None:
            return to_rgb(self.pil_image)
        if self.image_path is None:
            return None
        return load_image(self.image_path, self.origin)

    @property
    def key(self) -> tuple[str, str]:
        """Content identity within one side of one task: raw string + image identity."""
        if self.pil_image is not None:
            digest = hashlib.sha1(self.pil_image.tobytes()).hexdigest()
            return (self.raw, f"pil:{digest}")
        return (self.raw, self.image_path or "")


#: Modes whose pixels carry transparency; composited on white like the transformers image
#: processors do, so a transparent background does not turn black.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def load_image(path: str, origin: str = "") -> PILImage.Image:
    """Read ``path`` as an RGB image; every unreadable file is a one-line DataError.

    Pillow's decompression-bomb guard stays on: an image of more than
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is refused, naming the file, instead of filling memory.
    """
    from PIL import Image, UnidentifiedImageError

    where = f"{origin}: " if origin else ""
    try:
        with warnings.catch_warnings():
            # Between MAX_IMAGE_PIXELS and twice that Pillow only warns; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return to_rgb(img)
    except FileNotFoundError:
        raise DataError(
            f"{where}image not found: {path} (re-extract the images or pass --image-dir)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{where}image {path} is too large to decode safely ({exc}); replace it with a "
            "smaller copy"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{where}cannot read image {path} ({exc}); replace or re-download it"
        ) from None


def to_rgb(img: PILImage.Image) -> PILImage.Image:
    """Convert any Pillow mode to 8-bit RGB without losing the picture.

    Pillow's own ``convert("RGB")`` clips 16- and 32-bit grayscale at 255 (a 16-bit scan comes
    out almost white), and drops alpha (transparent areas take whatever colour is stored under
    them). Integer grayscale is rescaled to 0..255 instead, and transparency is composited on
    white. CMYK, palette, 1-bit and the other modes use Pillow's conversion.
    """
    from PIL import Image

    mode = img.mode
    if mode.startswith("I"):  # "I" (32-bit) and "I;16", "I;16B", "I;16L", "I;16N"
        import numpy as np

        pixels = np.asarray(img, dtype=np.float64)
        brightest = float(pixels.max(initial=0.0))
        # 16-bit modes span 0..65535; a 32-bit "I" image is scaled by the range its values use
        # (8-bit, 16-bit, else its own maximum), since the mode does not say.
        if mode.startswith("I;16") or 255 < brightest <= 65535:
            top = 65535.0
        else:
            top = 255.0 if brightest <= 255 else brightest
        scaled = np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")
