"""Small hand-drawn digits and measures of them, for the augmentation tests."""

from __future__ import annotations

import numpy as np

from trainer.augment_geometry import warp


def canvas(*boxes: tuple[int, int, int, int], level: float = 1.0) -> np.ndarray:
    """A (1, 784) float image with `level` in each (row0, row1, col0, col1) box (ends excluded)."""
    image = np.zeros((28, 28), dtype=np.float32)
    for r0, r1, c0, c1 in boxes:
        image[r0:r1, c0:c1] = level
    return image.reshape(1, 784)


def ink_box(image: np.ndarray, threshold: float = 0.25) -> tuple[int, int]:
    """(height, width) of the pixels above `threshold`."""
    rows, cols = np.nonzero(image.reshape(28, 28) > threshold)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    image = image.reshape(28, 28)
    rows, cols = np.mgrid[0:28, 0:28]
    return np.array([(rows * image).sum(), (cols * image).sum()]) / image.sum()


def ring(radius: float = 7.0, width: float = 2.5) -> np.ndarray:
    """(1, 784) a pen-drawn ring: a full-strength stroke `width` px wide with anti-aliased edges."""
    rows, cols = np.mgrid[0:28, 0:28]
    distance = np.abs(np.hypot(rows - 13.5, cols - 13.5) - radius)
    return np.clip(width / 2 + 0.5 - distance, 0, 1).astype(np.float32).reshape(1, 784)


def one(value: float, n: int = 1) -> np.ndarray:
    return np.full(n, value, dtype=np.float64)


def identity(image: np.ndarray, **change: object) -> np.ndarray:
    """`warp` with no change but `change`."""
    n = len(image)
    params = {"rotate": one(0, n), "shear": one(0, n), "scale": one(1, n), "shift": np.zeros((n, 2))}
    return warp(image, **{**params, **change})
