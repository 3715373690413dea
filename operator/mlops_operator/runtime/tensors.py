"""Raw tensor bytes of the Open Inference Protocol: the binary data extension and gRPC raw contents.

Both carry a tensor as its elements in row-major order, little-endian,
without padding; ``BOOL`` is one byte per element and ``BYTES`` is each
element as a 4-byte little-endian length followed by its bytes (as KServe
and Triton lay them out).  Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

NUMPY_TYPES: dict[str, str] = {
    "BOOL": "|b1",
    "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
_LENGTH = struct.Struct("<I")


class TensorBytesError(ValueError):
    """Raw bytes that do not hold the tensor their header describes; the message says how."""


def decode(raw: bytes | memoryview, datatype: str, count: int) -> np.ndarray | list[Any]:
    """``count`` elements of ``datatype`` from raw bytes: a numpy array, or a list of str for BYTES."""
    if datatype == "BYTES":
        return _decode_bytes(bytes(raw), count)
    dtype = np.dtype(NUMPY_TYPES[datatype])
    want = count * dtype.itemsize
    if len(raw) != want:
        raise TensorBytesError(f"{len(raw)} bytes, but {count} {datatype} elements take {want}")
    a = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and a.size and int(np.frombuffer(raw, dtype=np.uint8).max()) > 1:
        raise TensorBytesError("a BOOL element is neither 0 nor 1")
    return a


def _decode_bytes(raw: bytes, count: int) -> list[Any]:
    out: list[Any] = []
    pos, end = 0, len(raw)
    while pos < end:
        if len(out) == count:
            raise TensorBytesError(f"{end - pos} bytes left after {count} BYTES elements")
        if pos + 4 > end:
            raise TensorBytesError(f"BYTES element {len(out)}: its 4-byte length is cut off")
        (n,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + n > end:
            raise TensorBytesError(f"BYTES element {len(out)} says {n} bytes, {end - pos} are left")
        try:
            out.append(raw[pos:pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise TensorBytesError(f"BYTES element {len(out)} is not UTF-8 text") from None
        pos += n
    if len(out) != count:
        raise TensorBytesError(f"{len(out)} BYTES elements, the shape needs {count}")
    return out


def encode(values: np.ndarray, datatype: str) -> bytes:
    """The raw bytes of an output tensor (row-major)."""
    if datatype == "BYTES":
        parts = []
        for v in values.reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(_LENGTH.pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=np.dtype(NUMPY_TYPES[datatype])).tobytes()
