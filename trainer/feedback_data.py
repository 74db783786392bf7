"""People's corrections as training data: read them, hold a part out, weight the rest, report.

`--extra-data` (and the `/train` field `extra_data`) names where the corrections are: `feedback`,
the service's own store (a cluster's PostgreSQL with `MNIST_DATABASE_URL`, else `feedback.sqlite3`
in `MNIST_STATE_DIR`: what a training job started by the service reads, on a worker or in the
API's child), a copy of that file, or what `GET /feedback/export` gives (the zip, or a folder
with its two IDX files). A seeded share is held out for evaluation; the rest is repeated
`weight` times, so a few hundred corrections count beside 60,000 MNIST digits. The version's
manifest records how many were used and the accuracy on the held-out part.
"""

from __future__ import annotations

import gzip
import os
import sqlite3
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from feedback import DB_FILE, FeedbackStore, FeedbackUnavailable
from feedback.export import IMAGES_NAME, LABELS_NAME
from mlp import MLP
from trainer.evaluation import evaluate
from trainer.idx import IdxFormatError, parse_idx, read_idx

SERVICE_STORE = "feedback"  # the word for the service's own store
STATE_DIR_ENV = "MNIST_STATE_DIR"
DEFAULT_WEIGHT = 10
DEFAULT_HOLDOUT = 0.2
MAX_WEIGHT = 1000


class FeedbackDataError(ValueError):
    """Corrections that cannot be read or used; the message says where and why."""


def resolve(source: str, state_dir: Path | None = None) -> Path:
    """`feedback` -> the service's store under the state folder; anything else is a path."""
    if source == SERVICE_STORE:
        return Path(state_dir or os.environ.get(STATE_DIR_ENV) or "state") / DB_FILE
    return Path(source)


def load_feedback(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The corrections at `path` as uint8 images (n, 784) and labels (n,), oldest first."""
    path = Path(path)
    try:
        if path.is_dir():
            images, labels = read_idx(path / IMAGES_NAME), read_idx(path / LABELS_NAME)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                images = parse_idx(gzip.decompress(archive.read(IMAGES_NAME)), Path(IMAGES_NAME))
                labels = parse_idx(gzip.decompress(archive.read(LABELS_NAME)), Path(LABELS_NAME))
        elif path.is_file():
            pixels, labels = FeedbackStore(path).arrays()
            images = pixels
        else:
            raise FeedbackDataError(
                f"{path}: no feedback there (a feedback.sqlite3, the zip of GET /feedback/export, or a "
                "folder with its two IDX files)"
            )
    except (OSError, KeyError, IdxFormatError, zlib.error, EOFError, sqlite3.Error) as exc:
        raise FeedbackDataError(f"{path}: cannot read feedback: {exc}") from exc
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise FeedbackDataError(f"{path}: expected (n, 28, 28) images and n labels, got {images.shape}")
    if len(labels) and labels.max() > 9:
        raise FeedbackDataError(f"{path}: labels must be digits 0..9")
    return images.reshape(len(images), 784), labels.astype(np.uint8)


@dataclass(frozen=True)
class FeedbackMix:
    """The corrections split for a run: `x_train` (already repeated `weight` times) and a held-out part."""

    source: str
    samples: int
    weight: int
    x_train: np.ndarray  # (train_samples * weight, 784) uint8
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray

    @property
    def train_samples(self) -> int:
        return len(self.y_train) // max(1, self.weight)

    def manifest(self, net: MLP) -> dict[str, Any]:
        """What the version's manifest says of it: counts, weight, accuracy on the held-out part."""
        accuracy = evaluate(net, self.x_holdout, self.y_holdout).accuracy if len(self.y_holdout) else None
        return {
            "source": self.source,
            "samples": self.samples,
            "train_samples": self.train_samples,
            "weight": self.weight,
            "holdout_samples": len(self.y_holdout),
            "holdout_accuracy": accuracy,
        }


def mix_feedback(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    source: str,
    weight: int = DEFAULT_WEIGHT,
    holdout: float = DEFAULT_HOLDOUT,
    seed: int = 0,
) -> FeedbackMix:
    """Hold out `holdout` of the corrections (a seeded choice), repeat the rest `weight` times."""
    if not 1 <= weight <= MAX_WEIGHT:
        raise FeedbackDataError(f"the feedback weight must be 1..{MAX_WEIGHT}, got {weight}")
    if not 0 <= holdout < 1:
        raise FeedbackDataError(f"the feedback hold-out must be a share in [0, 1), got {holdout}")
    if not len(labels):
        raise FeedbackDataError(f"{source}: no feedback stored yet")
    order = np.random.default_rng(seed).permutation(len(labels))
    held = int(len(labels) * holdout)
    train, test = order[held:], order[:held]
    return FeedbackMix(
        source=source,
        samples=len(labels),
        weight=weight,
        x_train=np.tile(images[train], (weight, 1)),
        y_train=np.tile(labels[train], weight),
        x_holdout=images[test],
        y_holdout=labels[test],
    )


def load_from_database(database_url: str) -> tuple[np.ndarray, np.ndarray]:
    """A cluster's corrections, from its PostgreSQL (feedback.pgstore)."""
    from feedback.pgstore import PgFeedbackStore

    store = PgFeedbackStore(database_url)
    try:
        images, labels = store.arrays()
    except FeedbackUnavailable as exc:
        raise FeedbackDataError(str(exc)) from exc
    finally:
        store.close()
    return images.reshape(len(images), 784), labels


def feedback_mix(
    source: str,
    *,
    weight: int,
    holdout: float,
    seed: int,
    state_dir: Path | None = None,
    database_url: str | None = None,
) -> FeedbackMix:
    """Read the corrections `source` names and mix them for a run (FeedbackDataError if unusable).

    `feedback` is the service's store: PostgreSQL when `database_url` names a cluster's database,
    else feedback.sqlite3 in the state folder.
    """
    if source == SERVICE_STORE and database_url:
        images, labels = load_from_database(database_url)
        where = "PostgreSQL (feedback_samples)"
    else:
        path = resolve(source, state_dir)
        images, labels = load_feedback(path)
        where = str(path)
    return mix_feedback(images, labels, source=where, weight=weight, holdout=holdout, seed=seed)
