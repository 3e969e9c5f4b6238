"""Image preprocessing that gives the pixel values the original models were run with.

VLM2Vec (transformers 4.46) and E5-V (4.44) ran under transformers 4.x with Pillow up to 10.
Two details of that stack changed since, and each moves embeddings by up to ~1e-3:

- Pillow up to 10 resized in two passes, always horizontal first; newer Pillow goes vertical
  first when the height shrinks and the width grows. The passes round to 8 bits in between, so
  the order shows in the pixels. :func:`resize_two_pass` does the passes explicitly in the old
  order, which gives the old pixels under any Pillow.
- transformers 4.x's LLaVA-NeXT processor padded an image to its anyres grid with
  ``(target - size) // 2`` pixels on both sides, so an odd remainder left the last tile one
  pixel short (the per-tile resize then stretched it); transformers 5 centres exactly.

``pixel_pipeline=transformers4`` (the default of every VLM adapter) uses these; the value
``transformers5`` uses transformers 5's PIL processors as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from mmeb.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

PIXEL_PIPELINES = ("transformers4", "transformers5")


def parse_pixel_pipeline(value: str) -> str:
    if value not in PIXEL_PIPELINES:
        raise ModelError(
            f"unknown pixel_pipeline {value!r}; choose one of: {', '.join(PIXEL_PIPELINES)}"
        )
    return value


def resize_two_pass(image: PILImage.Image, size: tuple[int, int], resample: int) -> PILImage.Image:
    """``image.resize(size)`` (width, height) as Pillow up to 10 computed it: width first."""
    width, height = size
    if image.width != width and image.height != height:
        image = image.resize((width, image.height), resample)
    return image.resize((width, height), resample)


def _array_two_pass(
    resize: Callable[..., np.ndarray], image: np.ndarray, height: int, width: int, resample: Any
) -> np.ndarray:
    """A channels-first array resized by ``resize`` (one Pillow call each), width first."""
    from transformers.image_processing_utils import SizeDict

    if image.shape[-2] != height and image.shape[-1] != width:
        image = resize(image=image, size=SizeDict(height=image.shape[-2], width=width),
                       resample=resample)
    return resize(image=image, size=SizeDict(height=height, width=width), resample=resample)


def _restore(factory: str, state: dict[str, Any]) -> Any:
    """Unpickle an instance of one of the classes below (defined inside their factories, so
    that transformers is imported only when needed, and thus not found by name)."""
    cls = FACTORIES[factory]("transformers4")
    processor = cls.__new__(cls)
    processor.__dict__.update(state)
    return processor


@cache
def qwen2vl_image_processor(pipeline: str) -> Any:
    """The Qwen2-VL image processor class for ``pipeline``."""
    import transformers as tf

    if pipeline == "transformers5":
        return tf.Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    class Qwen2VLImageProcessorPilTransformers4(tf.Qwen2VLImageProcessorPil):  # type: ignore[misc, name-defined]
        def resize(  # type: ignore[override]
            self, image: Any, size: Any, resample: Any, factor: int, **kwargs: Any  # noqa: ARG002 (the overridden signature)
        ) -> Any:
            height, width = smart_resize(image.shape[-2], image.shape[-1], factor=factor,
                                         min_pixels=size.shortest_edge,
                                         max_pixels=size.longest_edge)
            # The PIL backend's plain resize, below Qwen2-VL's smart one.
            plain = super(tf.Qwen2VLImageProcessorPil, self).resize
            return _array_two_pass(plain, image, height, width, resample)

        def __reduce__(self) -> tuple[Any, ...]:  # picklable for DataLoader workers
            return _restore, ("qwen2vl", dict(self.__dict__))

    return Qwen2VLImageProcessorPilTransformers4


@cache
def llava_next_image_processor(pipeline: str) -> Any:
    """The LLaVA-NeXT image processor class for ``pipeline``."""
    import numpy as np
    import transformers as tf

    if pipeline == "transformers5":
        return tf.LlavaNextImageProcessorPil
    from transformers.image_processing_utils import get_patch_output_size
    from transformers.image_transforms import get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    class LlavaNextImageProcessorPilTransformers4(tf.LlavaNextImageProcessorPil):  # type: ignore[misc, name-defined]
        def resize(  # type: ignore[override]
            self, image: Any, size: Any, resample: Any = None, **kwargs: Any
        ) -> Any:
            if size.height and size.width:
                height, width = size.height, size.width
            elif size.shortest_edge:
                height, width = get_resize_output_image_size(
                    image, size=size.shortest_edge, default_to_square=False,
                    input_data_format=ChannelDimension.FIRST)
            else:
                return super().resize(image=image, size=size, resample=resample, **kwargs)
            return _array_two_pass(super().resize, image, height, width, resample)

        def _pad_for_patching(self, image: Any, target_resolution: tuple) -> Any:
            height, width = get_patch_output_size(
                image, target_resolution, input_data_format=ChannelDimension.FIRST
            )
            top = (target_resolution[0] - height) // 2
            left = (target_resolution[1] - width) // 2
            return np.pad(image, ((0, 0), (top, top), (left, left)), mode="constant")

        def __reduce__(self) -> tuple[Any, ...]:  # picklable for DataLoader workers
            return _restore, ("llava_next", dict(self.__dict__))

    return LlavaNextImageProcessorPilTransformers4


FACTORIES: dict[str, Callable[[str], Any]] = {"qwen2vl": qwen2vl_image_processor,
                                              "llava_next": llava_next_image_processor}
