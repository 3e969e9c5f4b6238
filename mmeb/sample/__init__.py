"""The sample suite: a procedural, license-free mini-MMEB in the exact MMEB formats.

``ensure_sample()`` returns the root of a cached copy (``eval/`` in MMEB-eval v1 layout,
``train/`` in MMEB-train layout), generating it on first use; ``mmeb.sample.generate.generate``
writes one anywhere. Importing this package loads no image or table library.
"""

from mmeb.sample.cache import ensure_sample, sample_root

__all__ = ["ensure_sample", "sample_root"]
