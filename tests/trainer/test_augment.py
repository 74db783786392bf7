"""Training augmentation: each transform does what it says, the options compose, a seed fixes it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mlp import INPUT_SCALE
from trainer.augment import (
    LOWRES_SIZES,
    Augmenter,
    AugmentSpec,
    augment,
    contrast,
    elastic_fields,
    gaussian_matrix,
    low_resolution,
    random_shift,
    source_grid,
    stretch,
    stroke_width,
    warp,
)
from trainer.config import PRESETS, ConfigError, TrainConfig

pytestmark = pytest.mark.usefixtures("one_blas_thread")

EVERYTHING = AugmentSpec(
    shift=1, rotate=15, scale=0.1, shear=10, elastic=30, stroke=1, contrast=0.5, lowres=0.3
)
ONE_AT_A_TIME = [
    {"rotate": 15}, {"scale": 0.2}, {"shear": 15}, {"elastic": 30}, {"stroke": 1}, {"contrast": 0.7},
    {"lowres": 1.0},
]  # fmt: skip


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


# -- the whole pipeline ---------------------------------------------------------------------------


def test_no_options_give_exactly_the_scaled_pixels(digits):
    images, _ = digits(64, seed=3)
    out = augment(images, AugmentSpec(), np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == (64, 784)
    np.testing.assert_array_equal(out, images.astype(np.float32) * np.float32(INPUT_SCALE))


def test_every_option_together_gives_float32_in_the_unit_range_and_leaves_the_input_alone(digits):
    images, _ = digits(200, seed=3)
    before = images.copy()
    out = Augmenter(EVERYTHING)(images, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == (200, 784)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(images, before)
    assert (out.max(axis=1) >= 254 / 255).all()  # the darkest ink is full scale, as digitize makes it


@pytest.mark.parametrize("change", ONE_AT_A_TIME)
def test_each_option_alone_changes_the_images_and_zero_leaves_them(digits, change):
    images, _ = digits(32, seed=4)
    plain = images.astype(np.float32) * np.float32(INPUT_SCALE)
    out = augment(images, AugmentSpec(**change), np.random.default_rng(0))
    assert np.abs(out - plain).mean() > 0.01
    zero = {key: 0 for key in change}
    np.testing.assert_array_equal(augment(images, AugmentSpec(**zero), np.random.default_rng(0)), plain)


def test_the_same_seed_gives_the_same_batches_and_another_seed_others(digits):
    images, _ = digits(100, seed=5)
    reused = Augmenter(EVERYTHING)
    first = [reused(images, np.random.default_rng(7)) for _ in range(2)]
    fresh = augment(images, EVERYTHING, np.random.default_rng(7))
    other = augment(images, EVERYTHING, np.random.default_rng(8))
    np.testing.assert_array_equal(first[0], first[1])  # its work arrays carry nothing over
    np.testing.assert_array_equal(first[0], fresh)
    assert not np.array_equal(fresh, other)


def test_a_batch_size_change_and_an_empty_batch_are_handled(digits):
    images, _ = digits(20, seed=6)
    augmenter = Augmenter(EVERYTHING)
    assert augmenter(images, np.random.default_rng(0)).shape == (20, 784)
    assert augmenter(images[:7], np.random.default_rng(0)).shape == (7, 784)
    assert augmenter(images[:0], np.random.default_rng(0)).shape == (0, 784)


def test_blank_images_stay_blank():
    out = augment(np.zeros((5, 784), np.uint8), EVERYTHING, np.random.default_rng(0))
    np.testing.assert_array_equal(out, 0)


def test_images_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"expected \(batch, 784\) images"):
        augment(np.zeros((3, 28, 28), np.uint8), EVERYTHING, np.random.default_rng(0))


def test_shifts_alone_are_the_original_whole_pixel_shifts(digits):
    images, _ = digits(50, seed=7)
    out = augment(images, AugmentSpec(shift=2), np.random.default_rng(3))
    expected = random_shift(images, 2, np.random.default_rng(3)).astype(np.float32) * np.float32(INPUT_SCALE)
    np.testing.assert_array_equal(out, expected)


def test_the_spec_is_read_from_a_config():
    config = TrainConfig(augment_rotate=12, augment_elastic=20, augment_elastic_sigma=5, augment_lowres=0.2)
    spec = AugmentSpec.from_config(config)
    assert (spec.rotate, spec.elastic, spec.elastic_sigma, spec.lowres, spec.shift) == (12, 20, 5, 0.2, 0)
    assert spec.geometric and spec.beyond_shift
    assert not AugmentSpec.from_config(PRESETS["fast"]).beyond_shift  # no augmentation: the old path


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


# -- strokes --------------------------------------------------------------------------------------


def reference_morphology(image: np.ndarray, op: str) -> np.ndarray:
    """3x3 grey dilation or erosion, pixels outside left out: the plain way."""
    fill = -np.inf if op == "max" else np.inf
    padded = np.pad(image.reshape(28, 28).astype(np.float64), 1, constant_values=fill)
    windows = np.stack([padded[dy : dy + 28, dx : dx + 28] for dy in range(3) for dx in range(3)])
    return (windows.max(axis=0) if op == "max" else windows.min(axis=0)).ravel()


def ink_level(image: np.ndarray) -> float:
    return float((image**2).sum() / image.sum())


def test_one_full_stroke_step_is_a_3x3_grey_dilation_or_a_re_inked_erosion(digits):
    images, _ = digits(4, seed=9)
    x = images.astype(np.float32) / 255
    thick = stroke_width(x, one(1, 4))
    thin = stroke_width(x, one(-1, 4))
    twice = stroke_width(x, one(2, 4))
    for i in range(4):
        np.testing.assert_allclose(thick[i], reference_morphology(x[i], "max"), atol=1e-6)
        once = reference_morphology(x[i], "max")
        np.testing.assert_allclose(twice[i], reference_morphology(once, "max"), atol=1e-6)
        eroded = reference_morphology(x[i], "min")
        retained = min(ink_level(eroded) / ink_level(x[i]), 1)
        np.testing.assert_allclose(thin[i], np.minimum(eroded / retained, 1), atol=1e-5)
    with pytest.raises(ValueError, match="at most one erosion"):
        stroke_width(x, one(-1.5, 4))


def test_strokes_thicken_and_thin_continuously_and_thin_ones_keep_their_ink():
    x = ring()
    amounts = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    ink = [stroke_width(x, one(a)).sum() for a in amounts]
    assert ink == sorted(ink) and len(set(ink)) == len(ink)  # more ink at every step
    np.testing.assert_array_equal(stroke_width(x, one(0)), x)
    half = stroke_width(x, one(0.5))
    np.testing.assert_allclose(half, (x + stroke_width(x, one(1))) / 2, atol=1e-6)
    eroded = reference_morphology(x[0], "min")
    for amount in (-0.5, -1.0):  # a thin pen's line, not a faint one
        thin = stroke_width(x, one(amount))
        faint = (1 + amount) * x + -amount * eroded  # the plain blend
        assert thin.max() == 1 and ink_level(thin) > 1.3 * ink_level(faint)
        assert thin.sum() < x.sum()
    assert (stroke_width(x, one(-1)) > 0.5).sum() < 0.6 * (x > 0.5).sum()  # a line 1 px wide


def test_thickened_digits_keep_their_box_after_the_resampling_pass(digits):
    bar = canvas((4, 24, 12, 15))
    spec = AugmentSpec(rotate=1e-9, stroke=2)  # geometry on (a no-op turn), strokes up to 2 dilations
    out = Augmenter(spec)(np.repeat((bar * 255).astype(np.uint8), 50, axis=0), np.random.default_rng(0))
    for image in out:
        assert max(ink_box(image, threshold=1e-6)) in range(18, 23)  # as digitize would scale it


# -- low resolution -------------------------------------------------------------------------------


def test_a_low_resolution_digit_keeps_its_box_and_centre_and_loses_its_detail():
    stripes = canvas((4, 24, 4, 24))
    stripes.reshape(28, 28)[:, ::2] = 0  # ten 1-pixel columns of ink in a 20 x 19 box
    for blocky in (True, False):
        out = low_resolution(stripes, one(5), np.array([[0.3, 0.6]]), np.array([blocky]))
        assert max(ink_box(out, threshold=0.2 * out.max())) in range(18, 23)
        np.testing.assert_allclose(centre_of_mass(out), centre_of_mass(stripes), atol=0.6)
        inside = out.reshape(28, 28)[8:20, 8:20]
        assert inside.std() < 0.15 * inside.mean()  # the stripes are averaged away at 5 px


def test_blocky_enlarging_repeats_pixels_and_bilinear_does_not():
    digit = canvas((4, 24, 9, 13), (4, 8, 9, 21), (14, 18, 13, 19))
    for blocky, equal_share in ((True, 0.2), (False, 0.1)):
        out = low_resolution(digit, one(6), np.array([[0.5, 0.5]]), np.array([blocky])).reshape(28, 28)
        inked = (out[:, 1:] > 0.05) & (out[:, :-1] > 0.05)
        equal = np.isclose(out[:, 1:], out[:, :-1], atol=1e-5) & inked
        share = equal.sum() / inked.sum()
        assert share > equal_share if blocky else share < equal_share


def test_larger_low_resolution_sizes_keep_more_detail():
    stripes = canvas((4, 24, 4, 24))
    stripes.reshape(28, 28)[:, ::4] = 0
    contrasts = []
    for size in (6, 10, 20):
        out = low_resolution(stripes, one(size), np.array([[0.0, 0.0]]), np.array([False])).reshape(28, 28)
        contrasts.append(out[8:20, 8:20].std())
    assert contrasts == sorted(contrasts)
    assert LOWRES_SIZES[0] <= 6 and LOWRES_SIZES[1] >= 10


# -- contrast -------------------------------------------------------------------------------------


def test_contrast_raises_ink_to_a_power_and_saturates_with_gain():
    x = np.array([[0.0, 0.25, 0.5, 1.0], [0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    out = contrast(x.copy(), np.array([2.0, 0.5]), np.array([1.0, 1.5]))
    np.testing.assert_allclose(out[0], [0, 0.0625, 0.25, 1], atol=1e-6)  # fainter fringe, same peak
    np.testing.assert_allclose(out[1], [0, 0.75, 1, 1], atol=1e-6)  # solid, clipped at full ink


def test_stretch_brings_the_darkest_ink_to_full_scale_as_digitize_does():
    x = np.array([[0.0, 0.2, 0.5], [0.0, 0.3, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(stretch(x), [[0, 0.4, 1], [0, 0.3, 1], [0, 0, 0]], atol=1e-6)


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"augment_rotate": -1}, "rotation must be 0..180 degrees"),
        ({"augment_rotate": 181}, "rotation must be 0..180 degrees"),
        ({"augment_scale": 1.0}, r"scale must be in \[0, 1\)"),
        ({"augment_shear": 61}, "shear must be 0..60 degrees"),
        ({"augment_elastic": 101}, "elastic must be 0..100 pixels"),
        ({"augment_elastic_sigma": 0.1}, "elastic sigma must be 0.5..10 pixels"),
        ({"augment_stroke": 2.5}, r"stroke must be 0..2"),
        ({"augment_contrast": -0.5}, "contrast must be 0..2"),
        ({"augment_lowres": 1.5}, "lowres must be a share 0..1"),
    ],
)
def test_out_of_range_augmentation_is_refused_in_one_line(change, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrainConfig(**change).validate()
    assert "\n" not in str(caught.value)


def test_the_options_are_recorded_with_the_rest_of_the_config():
    config = TrainConfig(augment_rotate=10, augment_stroke=0.5)
    recorded = config.as_dict()
    assert recorded["augment_rotate"] == 10 and recorded["augment_stroke"] == 0.5
    assert recorded["augment_elastic_sigma"] == 4.0
    assert {f.name for f in dataclasses.fields(AugmentSpec)} == {
        key.removeprefix("augment_") for key in recorded if key.startswith("augment_")
    }


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


def test_thinning_never_makes_a_hair_thin_digit_blank_or_not_finite():
    from trainer.augment import stroke_width

    hair = np.zeros((3, 784), np.float32)
    hair[:, 14 * 28 + 4 : 14 * 28 + 24] = 1.0  # a one-pixel line: one erosion wipes it out
    hair[1] *= 0.3  # faint
    out = stroke_width(hair, np.array([-1.0, -1.0, -0.5], np.float32))
    assert np.isfinite(out).all()
    assert (out.sum(axis=1) > 0).all()  # still a digit, not a blank picture
