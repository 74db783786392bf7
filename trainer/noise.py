"""Input noise, applied on the fly to one batch at a time (training) or to a test set (evaluation).

The research script saved 25 static noisy copies of MNIST (11 GB of float64). Drawing the noise
per batch costs microseconds and no disk, and a seeded generator keeps runs reproducible. The
other training-time changes to the images live in `trainer.augment`.
"""

from __future__ import annotations

import numpy as np

PIXELS = 784


def noisy_pixel_count(percent: float, pixels: int = PIXELS) -> int:
    """How many of an image's pixels `percent` % noise replaces."""
    if not 0 <= percent <= 100:
        raise ValueError(f"noise must be a percentage between 0 and 100, got {percent}")
    return round(pixels * percent / 100)


def add_noise(images: np.ndarray, percent: float, rng: np.random.Generator) -> np.ndarray:
    """Replace `percent` % of each image's pixels, chosen without repetition, by uniform [0, 1) values.

    `images` is float (batch, pixels) in [0, 1]; a new array is returned.
    """
    out = np.array(images, dtype=np.float32, copy=True)
    n, pixels = out.shape
    k = noisy_pixel_count(percent, pixels)
    if k == 0:
        return out
    # The k smallest of a row of random keys are k distinct positions, uniformly chosen.
    keys = rng.random((n, pixels), dtype=np.float32)
    where = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < pixels else np.argsort(keys, axis=1)
    out[np.arange(n)[:, None], where] = rng.random((n, k), dtype=np.float32)
    return out
