"""The feedback set as MNIST's own file format: IDX images and labels, gzipped, in one zip.

A zip rather than a tar: Python, unzip and every notebook read it without flags. Beside the two IDX
files, `samples.csv` says for each row (same order) its id, the version that answered, its answer,
confidence and when it was given, which the IDX format has no room for.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from feedback.store import FeedbackSample
from registry.timestamps import format_utc

IMAGES_NAME = "feedback-images-idx3-ubyte.gz"
LABELS_NAME = "feedback-labels-idx1-ubyte.gz"
SAMPLES_NAME = "samples.csv"
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file of `array`: (n, 28, 28) images or (n,) labels."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {3: IMAGES_MAGIC, 1: LABELS_MAGIC}.get(data.ndim)
    if magic is None:
        raise ValueError(f"IDX holds (n, rows, cols) images or (n,) labels, got shape {data.shape}")
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    return header + data.tobytes()


def export_zip(samples: Sequence[FeedbackSample]) -> bytes:
    """The zip of the feedback set: images and labels as gzipped IDX, and samples.csv."""
    pixels = np.stack([s.pixels for s in samples]) if samples else np.zeros((0, 28, 28), np.uint8)
    labels = np.array([s.label for s in samples], dtype=np.uint8)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["id", "label", "version", "answer", "confidence", "created_at"])
    for s in samples:
        created = format_utc(datetime.fromtimestamp(s.created_at, UTC))
        writer.writerow([s.id, s.label, s.version or "", "" if s.answer is None else s.answer,
                         "" if s.confidence is None else s.confidence, created])  # fmt: skip
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:  # the IDX files are gzipped
        archive.writestr(IMAGES_NAME, gzip.compress(idx_bytes(pixels), mtime=0))
        archive.writestr(LABELS_NAME, gzip.compress(idx_bytes(labels), mtime=0))
        archive.writestr(SAMPLES_NAME, table.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()
