"""Reader and writer for the IDX array format used by MNIST and FashionMNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, then ``NDIM``
big-endian ``uint32`` dimension sizes, then the values in C order, big-endian.
``TYPE`` is one of the codes in :data:`IDX_TYPES`. Files may be gzip-compressed;
compression is recognised from the content (the gzip magic ``1f 8b``), not the name.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code -> big-endian NumPy dtype."""

_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> BinaryIO:
    stream = path.open("rb")
    if stream.read(2) == _GZIP_MAGIC:
        stream.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    stream.seek(0)
    return stream


def _read_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{path} is not an IDX file: bad magic number {magic.hex() or '(empty)'}")
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_TYPES:
        accepted = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02X}; accepted: {accepted}")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({4 + len(dims)} bytes, need {4 + 4 * ndim})")
    return IDX_TYPES[type_code], struct.unpack(f">{ndim}I", dims)


def _corrupt_gzip(path: Path, err: Exception) -> ValueError:
    return ValueError(f"corrupt gzip IDX file {path}: {err}")


def idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype (big-endian) and shape stored in an IDX file's header, reading nothing else.

    Raises:
        ValueError: naming the file, as :func:`read_idx`.
    """
    path = Path(path)
    try:
        with _open(path) as stream:
            return _read_header(stream, path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise _corrupt_gzip(path, err) from None


def read_idx(path: str | Path, *, limit: int | None = None) -> torch.Tensor:
    """Read an IDX file (plain or gzip-compressed) into a tensor.

    Args:
        path: The file.
        limit: Read only the first ``limit`` entries along the first axis (the
            rest of the file is neither decompressed nor checked).

    Returns:
        Tensor of the shape stored in the header (first axis cut to ``limit``),
        in native byte order (``uint8``, ``int8``, ``int16``, ``int32``,
        ``float32`` or ``float64``).

    Raises:
        ValueError: naming the file, for a bad magic number, an unknown type
            code, a corrupt gzip stream, or a payload whose size does not match
            the header (truncated or padded file).
    """
    path = Path(path)
    try:
        with _open(path) as stream:
            dtype, shape = _read_header(stream, path)
            count = shape[0] if shape else 1
            if limit is not None and shape:
                count = min(limit, shape[0])
            item_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            data = stream.read(count * item_bytes)
            padded = count == (shape[0] if shape else 1) and stream.read(1) != b""
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise _corrupt_gzip(path, err) from None
    if len(data) < count * item_bytes or padded:
        found = f"only {len(data)}" if not padded else "more than that"
        raise ValueError(
            f"{path}: IDX size mismatch, header says shape {tuple(shape)} ({expected} bytes of data) "
            f"but the file holds {found}; the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]) if shape else ())
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, array: torch.Tensor | np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Raises:
        TypeError: for a dtype IDX cannot store (accepted: uint8, int8, int16,
            int32, float32, float64).
    """
    path = Path(path)
    data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    codes = {dt.newbyteorder("=").str: code for code, dt in IDX_TYPES.items()}
    key = data.dtype.newbyteorder("=").str
    if key not in codes:
        accepted = ", ".join(str(dt.newbyteorder("=")) for dt in IDX_TYPES.values())
        raise TypeError(f"IDX cannot store dtype {data.dtype}; accepted: {accepted}")
    code = codes[key]
    header = bytes([0, 0, code, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape)
    body = header + np.ascontiguousarray(data, dtype=IDX_TYPES[code]).tobytes()
    path.write_bytes(gzip.compress(body, compresslevel=6) if path.suffix == ".gz" else body)
    return path
