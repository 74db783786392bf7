"""Pixel noise: exactly the pixels promised, nothing else touched."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.noise import add_noise, noisy_pixel_count

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
