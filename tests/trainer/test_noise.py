"""Pixel noise and random shifts: exactly the pixels promised, nothing else touched."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.noise import add_noise, noisy_pixel_count, random_shift

SENTINEL = 2.0  # outside [0, 1): a pixel that still holds it was not replaced


@pytest.mark.parametrize("percent", [0.5, 5, 10, 25, 50, 99.9])
def test_add_noise_replaces_exactly_round_784_p_distinct_pixels_per_image(percent):
    images = np.full((64, 784), SENTINEL, dtype=np.float32)
    out = add_noise(images, percent, np.random.default_rng(0))
    expected = round(784 * percent / 100)
    assert expected == noisy_pixel_count(percent)
    changed = out != SENTINEL
    # a pixel drawn twice would make the count come up short
    np.testing.assert_array_equal(changed.sum(axis=1), expected)
    assert ((out[changed] >= 0) & (out[changed] < 1)).all()
    assert out.dtype == np.float32 and out.shape == images.shape
    assert (images == SENTINEL).all()  # the input is untouched
    if expected > 1:  # different images get different positions
        assert not (changed == changed[0]).all()


def test_noise_positions_are_spread_over_the_whole_image():
    out = add_noise(np.full((500, 784), SENTINEL, dtype=np.float32), 10, np.random.default_rng(1))
    hits = (out != SENTINEL).sum(axis=0)  # how often each pixel was chosen; about 50 each
    assert hits.min() > 15 and hits.max() < 95


def test_zero_percent_changes_nothing_and_100_percent_changes_everything():
    images = np.full((8, 784), SENTINEL, dtype=np.float32)
    out = add_noise(images, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, images)
    assert out is not images
    everything = add_noise(images, 100, np.random.default_rng(0))
    assert ((everything >= 0) & (everything < 1)).all()
    assert len(np.unique(everything)) > 784  # real draws, not one value repeated


def test_add_noise_is_reproducible_with_a_seed_and_varies_without_one():
    images = np.random.default_rng(2).uniform(0, 1, (10, 784)).astype(np.float32)
    a = add_noise(images, 15, np.random.default_rng(42))
    b = add_noise(images, 15, np.random.default_rng(42))
    c = add_noise(images, 15, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("percent", [-1, -0.01, 100.5, 1000])
def test_invalid_percentages_are_refused(percent):
    with pytest.raises(ValueError, match="percentage between 0 and 100"):
        add_noise(np.zeros((2, 784), np.float32), percent, np.random.default_rng(0))


def test_random_shift_moves_a_single_pixel_by_at_most_max_shift_with_zero_fill():
    images = np.zeros((300, 28, 28), dtype=np.uint8)
    images[:, 14, 13] = 200
    out = random_shift(images.reshape(300, 784), 2, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == (300, 784)
    seen = set()
    for row in out.reshape(300, 28, 28):
        (ys, xs) = np.nonzero(row)
        assert len(ys) == 1 and row[ys[0], xs[0]] == 200  # moved, not copied or blurred; rest is zero
        dy, dx = int(ys[0]) - 14, int(xs[0]) - 13
        assert abs(dy) <= 2 and abs(dx) <= 2
        seen.add((dy, dx))
    assert len(seen) == 25  # every shift in -2..2 x -2..2 happens
    assert images[:, 14, 13].min() == 200 and images.sum() == 300 * 200  # input untouched


def test_random_shift_fills_the_uncovered_border_with_zeros():
    full = np.full((50, 784), 7.0, dtype=np.float32)
    out = random_shift(full, 3, np.random.default_rng(1)).reshape(50, 28, 28)
    assert out.dtype == np.float32
    for image in out:
        lit_rows = np.nonzero(image.any(axis=1))[0]
        lit_cols = np.nonzero(image.any(axis=0))[0]
        # what is left is one 7-filled rectangle at least 25 x 25, the rest zeros
        assert len(lit_rows) >= 25 and len(lit_cols) >= 25
        block = image[lit_rows[0] : lit_rows[-1] + 1, lit_cols[0] : lit_cols[-1] + 1]
        assert (block == 7).all()
        assert image.sum() == 7 * block.size


def test_random_shift_of_zero_returns_the_input_unchanged():
    images = np.random.default_rng(0).integers(0, 256, (5, 784), dtype=np.uint8)
    before = images.copy()
    out = random_shift(images, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(images, before)
