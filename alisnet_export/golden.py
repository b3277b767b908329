"""Golden vectors: a small input and its expected outputs, for on-device self-checks.

Binary layout "ALGV" version 1 (little-endian throughout; mirrored by the Kotlin and Swift cores,
documented in ``docs/bundle-contract.md``)::

    offset 0   4 bytes   magic  b"ALGV"
           4   u32       format version (1)
           8   u32       tensor count T
    then T records:
               u16       name length L
               L bytes   name, UTF-8
               u8        dtype code: 0 uint8, 1 float32, 2 int32, 3 int64
               u8        ndim D
               D x u32   dims (row-major, outermost first)
               u64       payload length in bytes (= prod(dims) * itemsize)
               payload   the values, row-major, little-endian

Standard tensor names in a bundle's golden file:

* ``source_rgb``    (h, w, 3) uint8: an RGB photo crop, before any preprocessing
* ``input``         (1, 3, H, W) float32: ``source_rgb`` after the preprocessing spec (resize to H x W, normalise)
* ``logits.float``  (1, K, H, W) float32: the float model's output on ``input`` (the reference)
* ``mask.float``    (H, W) uint8: ``logits.float[0, 1] > logits.float[0, 0]``
* ``logits.<id>``   (1, K, H, W) float32: each artifact's own output on ``input`` on the exporting machine
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import DataError

__all__ = ["MAGIC", "FORMAT_VERSION", "DTYPE_CODES", "write_golden", "read_golden", "encode_golden", "decode_golden"]

MAGIC = b"ALGV"
FORMAT_VERSION = 1
DTYPE_CODES: dict[np.dtype, int] = {
    np.dtype(np.uint8): 0,
    np.dtype(np.float32): 1,
    np.dtype(np.int32): 2,
    np.dtype(np.int64): 3,
}
_CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


def encode_golden(tensors: Mapping[str, np.ndarray]) -> bytes:
    """Serialise named arrays (uint8, float32, int32 or int64) in the ALGV v1 layout."""
    parts = [MAGIC, struct.pack("<II", FORMAT_VERSION, len(tensors))]
    for name, array in tensors.items():
        arr = np.asarray(array)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        if arr.dtype not in DTYPE_CODES:
            raise ValueError(f"golden tensor {name!r}: dtype {arr.dtype} is not one of uint8/float32/int32/int64")
        raw_name = name.encode("utf-8")
        if len(raw_name) > 0xFFFF or arr.ndim > 255:
            raise ValueError(f"golden tensor {name!r}: name too long or too many dims")
        payload = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        parts += [
            struct.pack("<H", len(raw_name)),
            raw_name,
            struct.pack("<BB", DTYPE_CODES[arr.dtype], arr.ndim),
            struct.pack(f"<{arr.ndim}I", *arr.shape),
            struct.pack("<Q", len(payload)),
            payload,
        ]
    return b"".join(parts)


def decode_golden(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Parse the ALGV v1 layout; raise :class:`DataError` naming ``source`` if it is malformed."""
    def need(n: int, pos: int, what: str) -> None:
        if pos + n > len(data):
            raise DataError(f"{source}: golden file truncated while reading {what} (offset {pos}, size {len(data)})")

    need(12, 0, "the header")
    if data[:4] != MAGIC:
        raise DataError(f"{source}: not a golden-vector file (magic {data[:4]!r}, expected {MAGIC!r})")
    version, count = struct.unpack_from("<II", data, 4)
    if version != FORMAT_VERSION:
        raise DataError(f"{source}: golden format version {version}; this tool reads version {FORMAT_VERSION}")
    pos = 12
    out: dict[str, np.ndarray] = {}
    for i in range(count):
        need(2, pos, f"tensor {i} name length")
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        need(name_len + 2, pos, f"tensor {i} name")
        name = data[pos:pos + name_len].decode("utf-8")
        pos += name_len
        code, ndim = struct.unpack_from("<BB", data, pos)
        pos += 2
        if code not in _CODE_DTYPES:
            raise DataError(f"{source}: tensor {name!r} has unknown dtype code {code}")
        need(4 * ndim + 8, pos, f"tensor {name!r} shape")
        dims = struct.unpack_from(f"<{ndim}I", data, pos)
        pos += 4 * ndim
        (nbytes,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        dtype = _CODE_DTYPES[code]
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise DataError(f"{source}: tensor {name!r} declares {nbytes} bytes but shape {dims} needs {expected}")
        need(nbytes, pos, f"tensor {name!r} payload")
        out[name] = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=expected // dtype.itemsize,
                                  offset=pos).reshape(dims).astype(dtype)
        pos += nbytes
    if pos != len(data):
        raise DataError(f"{source}: {len(data) - pos} unexpected trailing bytes after {count} tensors")
    return out


def write_golden(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    Path(path).write_bytes(encode_golden(tensors))


def read_golden(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read golden vectors: {exc.strerror}") from None
    return decode_golden(data, source=str(path))
