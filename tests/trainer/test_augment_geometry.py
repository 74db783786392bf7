"""The geometric half of augmentation (trainer/augment_geometry.py): turns, slants, scale, shifts, elastic."""

from __future__ import annotations

import numpy as np
import pytest
from digitshapes import canvas, centre_of_mass, identity, ink_box, one

from trainer.augment_geometry import elastic_fields, gaussian_matrix, random_shift, source_grid

pytestmark = pytest.mark.usefixtures("one_blas_thread")


# -- geometry -------------------------------------------------------------------------------------


def test_rotating_a_vertical_bar_by_90_degrees_makes_it_horizontal():
    bar = canvas((4, 24, 13, 15))  # 20 rows, 2 columns
    out = identity(bar, rotate=one(90))
    height, width = ink_box(out)
    assert (height, width) == (2, 20)
    np.testing.assert_allclose(out.sum(), bar.sum(), rtol=0.02)  # ink is moved, not lost
    np.testing.assert_allclose(centre_of_mass(out), centre_of_mass(bar), atol=0.1)


def test_positive_angles_turn_anticlockwise_and_slant_the_top_to_the_right():
    bar = canvas((4, 14, 13, 15), (14, 24, 13, 15))
    bar.reshape(28, 28)[4:14] *= 0.5  # a dimmer top half, to tell the ends apart
    turned = identity(bar, rotate=one(90)).reshape(28, 28)
    columns = np.nonzero(turned.max(axis=0) > 0.1)[0]
    left, right = turned[:, columns[:5]].max(), turned[:, columns[-5:]].max()
    assert left < 0.7 * right  # the dim top went to the left: anticlockwise on screen

    slanted = identity(canvas((4, 24, 13, 15)), shear=one(30)).reshape(28, 28)
    top_column = np.average(np.arange(28), weights=slanted[5])
    bottom_column = np.average(np.arange(28), weights=slanted[22])
    assert top_column - bottom_column > 5  # the top leans right


@pytest.mark.parametrize(("rotate", "shear"), [(0, 0), (45, 0), (-30, 0), (20, 15), (0, -25), (90, 0)])
def test_the_ink_box_keeps_its_long_side_when_turned_or_slanted(rotate, shear):
    # digitize scales the box of every inked pixel, however faint, to 20 px: so must the samples
    for shape in (canvas((7, 21, 7, 21)), canvas((4, 24, 13, 15)), canvas((4, 24, 8, 11), (4, 7, 8, 20))):
        long_side = max(ink_box(shape, threshold=0))
        out = identity(shape, rotate=one(rotate), shear=one(shear))
        assert max(ink_box(out, threshold=1e-6)) in (long_side - 1, long_side, long_side + 1)


def test_scale_changes_the_ink_box_by_its_factor():
    square = canvas((7, 21, 7, 21))  # 14 x 14
    for factor in (1.3, 0.7):
        side = max(ink_box(identity(square, scale=one(factor)), threshold=1e-6))
        assert abs(side - factor * 14) <= 2  # edge pixels: faint samples of a partly covered pixel count


def test_whole_pixel_shifts_in_the_resampling_pass_are_exact(digits):
    images, _ = digits(3, seed=8)
    x = images.astype(np.float32) / 255
    out = identity(x, shift=np.array([[2, -1], [0, 0], [-3, 1]]))
    expected = np.zeros((3, 28, 28), np.float32)
    expected[0, 2:, :-1] = x[0].reshape(28, 28)[:-2, 1:]
    expected[1] = x[1].reshape(28, 28)
    expected[2, :-3, 1:] = x[2].reshape(28, 28)[3:, :-1]
    np.testing.assert_allclose(out.reshape(3, 28, 28), expected, atol=1e-6)


def test_the_elastic_field_has_simards_variance_and_is_smooth():
    n, alpha, sigma = 3000, 30.0, 4.0
    x = np.tile(canvas((4, 24, 13, 15)), (n, 1))  # any ink: the field does not depend on it
    fields = elastic_fields(n, alpha, sigma, np.random.default_rng(0))
    src_y, src_x = source_grid(x, one(0, n), one(0, n), one(1, n), np.zeros((n, 2)), fields)
    rows, cols = (a.ravel() for a in np.mgrid[0:28, 0:28])
    dy, dx = src_y - rows, src_x - cols
    # Simard: uniform(-1, 1) noise (variance 1/3) smoothed by G on both axes, times alpha
    g = gaussian_matrix(28, sigma).astype(np.float64)
    spread = np.diag(g @ g.T)
    expected = alpha * np.sqrt(np.outer(spread, spread).ravel() / 3)
    for d in (dy, dx):
        np.testing.assert_allclose(d.std(axis=0), expected, rtol=0.08)
        assert np.abs(d.mean(axis=0)).max() < 0.1 * expected.max()
        neighbours = np.corrcoef(d[:, 14 * 28 + 14], d[:, 14 * 28 + 15])[0, 1]
        assert neighbours > 0.95  # sigma 4: a smooth field, not pixel noise
    assert abs(np.corrcoef(dy[:, 400], dx[:, 400])[0, 1]) < 0.1  # the two axes are independent


def test_the_gaussian_matrix_is_a_normalised_gaussian_filter_reflecting_at_the_edges():
    g = gaussian_matrix(28, 2.0).astype(np.float64)
    np.testing.assert_allclose(g.sum(axis=1), 1, atol=1e-6)
    impulse = np.zeros(28)
    impulse[14] = 1
    weights = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
    np.testing.assert_allclose((g @ impulse)[6:23], weights / weights.sum(), atol=1e-6)
    # at the edge, what falls outside comes back in: pixel 0 sees itself for offsets 0 and -1
    assert g[0, 0] == pytest.approx((weights[8] + weights[7]) / weights.sum(), abs=1e-6)


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
