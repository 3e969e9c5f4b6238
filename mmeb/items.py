"""What an encoder receives: one query or candidate of an MMEB row."""

from __future__ import annotations

import hashlib
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
            return self.pil_image.convert("RGB")
        if self.image_path is None:
            return None
        from PIL import Image, UnidentifiedImageError

        where = f"{self.origin}: " if self.origin else ""
        try:
            with Image.open(self.image_path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise DataError(
                f"{where}image not found: {self.image_path} (re-extract the images or pass "
                "--image-dir)"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(
                f"{where}cannot read image {self.image_path} ({exc}); replace or re-download it"
            ) from None

    @property
    def key(self) -> tuple[str, str]:
        """Content identity within one side of one task: raw string + image identity."""
        if self.pil_image is not None:
            digest = hashlib.sha1(self.pil_image.tobytes()).hexdigest()
            return (self.raw, f"pil:{digest}")
        return (self.raw, self.image_path or "")
