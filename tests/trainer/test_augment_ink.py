"""The ink half of augmentation (trainer/augment_ink.py): stroke width, low resolution, contrast."""

from __future__ import annotations

import numpy as np
import pytest
from digitshapes import canvas, centre_of_mass, ink_box, one, ring

from trainer.augment import LOWRES_SIZES, Augmenter, AugmentSpec
from trainer.augment_ink import contrast, low_resolution, stretch, stroke_width

pytestmark = pytest.mark.usefixtures("one_blas_thread")


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


def test_thinning_never_makes_a_hair_thin_digit_blank_or_not_finite():
    hair = np.zeros((3, 784), np.float32)
    hair[:, 14 * 28 + 4 : 14 * 28 + 24] = 1.0  # a one-pixel line: one erosion wipes it out
    hair[1] *= 0.3  # faint
    out = stroke_width(hair, np.array([-1.0, -1.0, -0.5], np.float32))
    assert np.isfinite(out).all()
    assert (out.sum(axis=1) > 0).all()  # still a digit, not a blank picture
