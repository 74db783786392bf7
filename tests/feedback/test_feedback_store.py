"""The feedback store (a real SQLite file) and its IDX export."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from feedback import FeedbackStore, Retention
from feedback.export import IMAGES_NAME, LABELS_NAME, export_zip, idx_bytes
from trainer.idx import parse_idx


def digit(value: int) -> np.ndarray:
    return np.full((28, 28), value, dtype=np.uint8)


def test_a_missing_file_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "none" / "feedback.sqlite3")
    assert store.count() == 0 and store.samples() == [] and store.arrays()[0].shape == (0, 28, 28)
    assert not (tmp_path / "none").exists()


def test_samples_keep_pixels_label_version_answer_confidence_and_time(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite3")
    pixels = np.arange(784, dtype=np.uint8).reshape(28, 28)
    first = store.add(pixels, 7, version="v0002", answer=1, confidence=0.75, now=1000.0)
    second = store.add(digit(3), 3, version="v0002", answer=3, confidence=0.5, now=1001.0)
    assert second == first + 1
    samples = store.samples()
    assert [s.pixels.tolist() for s in samples] == [pixels.tolist(), digit(3).tolist()]
    assert [(s.label, s.version, s.answer, s.confidence, s.created_at, s.correct) for s in samples] == [
        (7, "v0002", 1, 0.75, 1000.0, False),
        (3, "v0002", 3, 0.5, 1001.0, True),
    ]
    assert [s.id for s in store.page(1, 0)] == [second] and [s.id for s in store.page(5, 1)] == [first]


def test_retention_drops_the_oldest_beyond_the_count_and_the_age(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite3", Retention(max_count=3, days=1))
    for k in range(5):
        store.add(digit(k), k, version="v1", answer=k, confidence=1.0, now=1000.0 + k)
    assert [s.label for s in store.samples()] == [2, 3, 4]
    store.add(digit(9), 9, version="v1", answer=9, confidence=1.0, now=1004.0 + 86400.5)  # a day later
    assert [s.label for s in store.samples()] == [9]


@pytest.mark.parametrize(
    ("pixels", "label"), [(np.zeros((27, 28), np.uint8), 1), (digit(0), 10), (digit(0), -1)]
)
def test_bad_samples_are_refused_before_anything_is_written(tmp_path: Path, pixels, label) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite3")
    with pytest.raises(ValueError):
        store.add(pixels, label, version=None, answer=None, confidence=None)
    assert store.count() == 0


def test_the_export_is_mnist_idx_read_by_the_trainers_parser(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite3")
    for k in (4, 2):
        store.add(digit(k * 20), k, version="v1", answer=0, confidence=0.1)
    with zipfile.ZipFile(io.BytesIO(export_zip(store.samples()))) as archive:
        images = parse_idx(gzip.decompress(archive.read(IMAGES_NAME)), Path(IMAGES_NAME))
        labels = parse_idx(gzip.decompress(archive.read(LABELS_NAME)), Path(LABELS_NAME))
    assert images.shape == (2, 28, 28) and images[:, 0, 0].tolist() == [80, 40] and labels.tolist() == [4, 2]
    with zipfile.ZipFile(io.BytesIO(export_zip([]))) as archive:  # an empty set is still valid IDX
        assert parse_idx(gzip.decompress(archive.read(IMAGES_NAME)), Path("x")).shape == (0, 28, 28)
    with pytest.raises(ValueError):
        idx_bytes(np.zeros((2, 2)))


def test_the_cluster_store_in_postgresql_keeps_the_same_samples_and_bounds(database_url: str) -> None:
    from feedback.pgstore import PgFeedbackStore

    store = PgFeedbackStore(database_url, Retention(max_count=3, days=1))
    try:
        assert store.count() == 0 and store.samples() == []
        pixels = np.arange(784, dtype=np.uint8).reshape(28, 28)
        ids = [
            store.add(pixels, k, version="v0003", answer=1, confidence=0.25, now=1000.0 + k) for k in range(5)
        ]
        assert ids == sorted(ids) and store.count() == 3
        samples = store.samples()
        assert [s.label for s in samples] == [2, 3, 4] and [s.id for s in store.page(2, 0)] == ids[:1:-1][:2]
        assert samples[0].pixels.tolist() == pixels.tolist()
        assert (samples[0].version, samples[0].answer, samples[0].confidence, samples[0].correct) == (
            "v0003", 1, 0.25, False,
        )  # fmt: skip
        store.add(digit(9), 9, version=None, answer=None, confidence=None, now=1004.0 + 86400.5)
        assert [s.label for s in store.samples()] == [9]
        images, labels = store.arrays()
        assert images.shape == (1, 28, 28) and labels.tolist() == [9]
        with pytest.raises(ValueError):
            store.add(digit(0), 10, version=None, answer=None, confidence=None)
    finally:
        store.close()


def test_a_store_whose_file_was_deleted_starts_a_new_one(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite3")
    store.add(digit(1), 1, version="v1", answer=1, confidence=1.0)
    (tmp_path / "f.sqlite3").unlink()
    store.add(digit(2), 2, version="v1", answer=2, confidence=1.0)
    assert [s.label for s in store.samples()] == [2]
