"""Parse IDX files, the format MNIST and Fashion-MNIST ship in (http://yann.lecun.com/exdb/mnist/).

An IDX file is a 4-byte magic number (two zero bytes, a data-type byte, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order. We only need
unsigned bytes: images (magic 0x00000803, shape N x rows x cols) and labels (0x00000801, N).
Every check names the file and says what was expected and what was found, because the usual
failure is a truncated download or a file that is not what its name says.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 0x00000803  # 2051
LABELS_MAGIC = 0x00000801  # 2049
UBYTE = 0x08

_GZIP_MAGIC = b"\x1f\x8b"
_KINDS = {3: "pixels", 1: "labels"}  # number of dimensions -> what the payload holds
_IDX_TYPES = {  # data-type byte -> name, from the format's definition
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_EXPECTED_MAGIC = f"expected 0x{IMAGES_MAGIC:08X} (images) or 0x{LABELS_MAGIC:08X} (labels)"


class IdxFormatError(ValueError):
    """A file that is not a well-formed unsigned-byte IDX file; the message names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path.name}: {problem}")
        self.path = path
        self.problem = problem


def read_idx(path: Path) -> np.ndarray:
    """Read a raw or gzipped IDX file: uint8 (N, rows, cols) for images, (N,) for labels.

    The array is a read-only view of the file's bytes (no copy, no per-pixel Python loop).
    """
    path = Path(path)
    return parse_idx(read_idx_bytes(path), path)


def read_idx_bytes(path: Path) -> bytes:
    """Return the IDX bytes of a file, gunzipped when it is a gzip stream.

    Separate from parsing so that callers can hash the uncompressed content: the same data
    recompressed (as Debian's Fashion-MNIST package is) has another file hash but equal content.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # bad header, CRC, cut-off or corrupt data
            raise IdxFormatError(path, f"not a valid gzip stream ({exc})") from exc
    if path.suffix == ".gz":
        raise IdxFormatError(
            path, f"not a valid gzip stream (starts with {data[:2].hex() or 'nothing'}, expected 1f8b)"
        )
    return data


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Check the header of IDX `data` against its length and return the values as uint8.

    `path` is only used to name the file in error messages.
    """
    path = Path(path)
    if len(data) < 4:
        raise IdxFormatError(path, f"truncated: no 4-byte IDX magic number, file has {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    dtype, ndim = data[2], data[3]
    if data[0] or data[1] or dtype not in _IDX_TYPES or ndim == 0:
        raise IdxFormatError(path, f"wrong magic number 0x{magic:08X}, {_EXPECTED_MAGIC}")
    if dtype != UBYTE:
        raise IdxFormatError(
            path,
            f"unsupported data type byte 0x{dtype:02X} ({_IDX_TYPES[dtype]}) in magic number "
            f"0x{magic:08X}, expected 0x{UBYTE:02X} ({_IDX_TYPES[UBYTE]})",
        )
    if ndim not in _KINDS:
        raise IdxFormatError(
            path,
            f"unsupported number of dimensions {ndim} in magic number 0x{magic:08X}, "
            f"expected 3 (images, 0x{IMAGES_MAGIC:08X}) or 1 (labels, 0x{LABELS_MAGIC:08X})",
        )

    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(
            path, f"truncated header: {ndim} dimensions need {header} bytes, file has {len(data)}"
        )
    dims = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, header, 4))
    expected = math.prod(dims)
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else f"{found - expected} trailing bytes"
        shape = "x".join(map(str, dims))
        raise IdxFormatError(
            path,
            f"{problem}: header says {shape} = {expected} bytes of {_KINDS[ndim]}, file has {found}",
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)
