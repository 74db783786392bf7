"""IDX parsing: good files in both encodings, and every malformed case names the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from trainer.idx import IdxFormatError, read_idx


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """Serialise a uint8 array as IDX; `magic` overrides the 4-byte magic number."""
    head = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return head + dims + array.astype(np.uint8).tobytes()


IMAGES = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28).astype(np.uint8)
LABELS = np.array([7, 2, 1], dtype=np.uint8)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"])
def test_reads_images_gz_and_raw(tmp_path: Path, name: str) -> None:
    images = read_idx(write(tmp_path / name, idx_bytes(IMAGES)))
    assert images.dtype == np.uint8
    assert images.shape == (3, 28, 28)
    np.testing.assert_array_equal(images, IMAGES)


@pytest.mark.parametrize("name", ["t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"])
def test_reads_labels_gz_and_raw(tmp_path: Path, name: str) -> None:
    labels = read_idx(write(tmp_path / name, idx_bytes(LABELS)))
    assert labels.dtype == np.uint8
    assert labels.shape == (3,)
    np.testing.assert_array_equal(labels, LABELS)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "labels.idx"
    path.write_bytes(gzip.compress(idx_bytes(LABELS)))
    np.testing.assert_array_equal(read_idx(path), LABELS)


def test_result_is_read_only_view(tmp_path: Path) -> None:
    labels = read_idx(write(tmp_path / "l", idx_bytes(LABELS)))
    with pytest.raises(ValueError):
        labels[0] = 1


BAD_CASES = {
    "truncated images": (
        idx_bytes(IMAGES)[: 16 + 1200],
        "truncated: header says 3x28x28 = 2352 bytes of pixels, file has 1200",
    ),
    "trailing bytes": (idx_bytes(LABELS) + b"xx", "2 trailing bytes: header says 3 = 3 bytes of labels"),
    "wrong magic zero": (
        idx_bytes(LABELS, magic=b"\0\0\0\0"),
        "wrong magic number 0x00000000, expected 0x00000803 (images) or 0x00000801 (labels)",
    ),
    "wrong magic text": (b"PK\x03\x04" + b"\0" * 40, "wrong magic number 0x504B0304"),
    "wrong dtype byte": (
        idx_bytes(LABELS, magic=bytes([0, 0, 0x0D, 1])),
        "unsupported data type byte 0x0D (float32) in magic number 0x00000D01, expected 0x08 (unsigned byte)",
    ),
    "two dimensions": (
        idx_bytes(IMAGES[0]),
        "unsupported number of dimensions 2 in magic number 0x00000802",
    ),
    "truncated header": (bytes([0, 0, 8, 3, 0, 0]), "truncated header: 3 dimensions need 16 bytes"),
    "empty": (b"", "truncated: no 4-byte IDX magic number, file has 0 bytes"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_malformed_files_name_the_file(tmp_path: Path, case: str, gz: bool) -> None:
    data, message = BAD_CASES[case]
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = write(tmp_path / name, data)
    with pytest.raises(IdxFormatError) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{name}: {message}")
    assert info.value.path == path


def test_idx_format_error_is_value_error() -> None:
    assert issubclass(IdxFormatError, ValueError)


@pytest.mark.parametrize(
    "data",
    [
        b"\x1f\x8b" + b"garbage" * 10,  # gzip magic, broken header/body
        gzip.compress(idx_bytes(IMAGES))[:200],  # cut-off stream
        gzip.compress(idx_bytes(IMAGES))[:-8] + b"\0" * 8,  # bad CRC and size trailer
    ],
    ids=["garbage", "cut-off", "bad-crc"],
)
def test_corrupt_gzip(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(data)
    with pytest.raises(IdxFormatError, match=r"^t10k-images-idx3-ubyte\.gz: not a valid gzip stream"):
        read_idx(path)


def test_gz_name_without_gzip_content(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(LABELS))  # raw bytes under a .gz name
    with pytest.raises(IdxFormatError, match=r"not a valid gzip stream \(starts with 0000, expected 1f8b\)"):
        read_idx(path)
