"""Arrow <-> numpy without pyarrow's Python conversions.

``pa.scalar(...)``, ``pa.array(...)`` and ``Array.to_numpy()`` go through pyarrow's
Python/pandas interop layer, which imports pandas (about 0.2-0.4 s) on first use although
nothing here needs it. These helpers build constants from raw buffers and read integer arrays
straight from their data buffer, so reading a task never loads pandas.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def large_string_scalar(value: str) -> Any:
    """``pa.scalar(value, pa.large_string())`` built from buffers."""
    import pyarrow as pa

    data = value.encode()
    offsets = np.array([0, len(data)], dtype=np.int64)
    array = pa.Array.from_buffers(pa.large_string(), 1,
                                  [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return array[0]


def int_scalar(value: int, arrow_type: Any) -> Any:
    """An integer scalar of ``arrow_type`` (e.g. the type of ``list_value_length``)."""
    import pyarrow as pa

    dtype = np.dtype(f"int{arrow_type.bit_width}")
    array = pa.Array.from_buffers(arrow_type, 1, [None, pa.py_buffer(np.array([value], dtype))])
    return array[0]


def int_to_numpy(array: Any) -> np.ndarray:
    """A null-free integer pyarrow array as an int64 numpy array (read from its data buffer)."""
    if hasattr(array, "combine_chunks"):
        array = array.combine_chunks()
    if array.null_count:
        raise ValueError("int_to_numpy needs an array without nulls")
    dtype = np.dtype(f"int{array.type.bit_width}")
    values = np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array),
                           offset=array.offset * dtype.itemsize)
    return values.astype(np.int64)
