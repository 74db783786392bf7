"""Training augmentation: the options compose, a seed fixes it, the config carries it.

Each transform's own tests sit beside its code: test_augment_geometry.py, test_augment_ink.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mlp import INPUT_SCALE
from trainer.augment import Augmenter, AugmentSpec, augment
from trainer.augment_geometry import ink_outline, random_shift
from trainer.config import PRESETS, ConfigError, TrainConfig

pytestmark = pytest.mark.usefixtures("one_blas_thread")

EVERYTHING = AugmentSpec(
    shift=1, rotate=15, scale=0.1, shear=10, elastic=30, stroke=1, contrast=0.5, lowres=0.3
)
ONE_AT_A_TIME = [
    {"rotate": 15}, {"scale": 0.2}, {"shear": 15}, {"elastic": 30}, {"stroke": 1}, {"contrast": 0.7},
    {"lowres": 1.0},
]  # fmt: skip


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


def test_the_bits_do_not_depend_on_the_blas_thread_count(digits):
    """The batch helper process augments on one BLAS thread, the training thread on one or two,
    and a run must be the same either way (with OPENBLAS_CORETYPE=Haswell, two threads rounded
    the grids' products differently)."""
    images, _ = digits(1000, seed=2)
    made, outlines = [], []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            made.append(Augmenter(EVERYTHING)(images[:256], np.random.default_rng(3)))
            outlines.append(ink_outline(np.tile(images, (5, 1))).centre)
    np.testing.assert_array_equal(*made)
    np.testing.assert_array_equal(*outlines)


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


def test_a_training_sets_outlines_computed_once_give_the_same_batches(digits):
    """BatchMaker measures the training set's ink outlines once and indexes them per batch."""
    images, _ = digits(10, seed=3)
    outlines = ink_outline(images, chunk=3)  # in parts, as a large training set is
    for start in (0, 5):
        part = slice(start, start + 4)
        kept = Augmenter(EVERYTHING)(images[part], np.random.default_rng(5), outlines[part])
        measured = Augmenter(EVERYTHING)(images[part], np.random.default_rng(5))
        np.testing.assert_allclose(kept, measured, atol=1e-4)  # the centre's rounding: pixels vs ink
