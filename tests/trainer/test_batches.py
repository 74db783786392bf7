"""Training batches: which images each step sees, made inline or ahead by a helper, always the same."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mlp import INPUT_SCALE
from trainer.augment import Augmenter, AugmentSpec
from trainer.augment_geometry import random_shift
from trainer.batches import AheadBatches, BatchMaker, BatchPlan, InlineBatches, make_batches
from trainer.noise import add_noise

SPEC = AugmentSpec(rotate=10, elastic=20, stroke=0.5, lowres=0.2)
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def data(digits):
    x, y = digits(300, seed=2)
    return x, y.astype(np.int64)


def drain(batches, n: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    try:
        while n is None or len(out) < n:
            out.append(next(batches))
    except StopIteration:
        pass
    finally:
        batches.close()
    return out


def test_an_epoch_plan_visits_every_image_once_and_reshuffles_each_epoch():
    plan = BatchPlan(10, 3, epochs=True)
    rng = np.random.default_rng(0)
    first = np.concatenate([plan.indices(step, rng) for step in range(3)])
    second = np.concatenate([plan.indices(step, rng) for step in range(3, 6)])
    assert plan.per_epoch == 3 and len(set(first)) == 9 and len(set(second)) == 9
    assert not np.array_equal(first, second)
    draws = BatchPlan(10, 4, epochs=False).indices(0, np.random.default_rng(0))
    assert draws.shape == (4,) and draws.max() < 10


def test_a_batch_depends_only_on_the_seed_and_its_step(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 50, epochs=True), SPEC, 5.0, seed=3)
    forward = [make(step, Augmenter(SPEC)) for step in range(12)]
    backward = [make(step, Augmenter(SPEC)) for step in reversed(range(12))][::-1]
    for (xa, ya), (xb, yb) in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    epoch = np.concatenate([yb for _, yb in forward[:6]])
    assert sorted(epoch) == sorted(y)  # an epoch visits every image once (300 = 6 x 50)
    other = BatchMaker(x, y, BatchPlan(len(x), 50, epochs=True), SPEC, 5.0, seed=4)(0, Augmenter(SPEC))
    assert not np.array_equal(other[0], forward[0][0])


def test_batches_made_ahead_are_the_inline_ones_in_order_and_end_with_the_run(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 64, epochs=True), SPEC, 5.0, seed=3)
    inline = drain(InlineBatches(make, SPEC, 20))
    ahead = AheadBatches(make, SPEC, 20)
    got = []
    for _ in range(20):
        got.append(next(ahead))
        deadline = time.monotonic() + DEADLINE_S  # let the helper catch up now and then
        while ahead._ready.get(ahead.step) is None and time.monotonic() < deadline and ahead.step < 19:
            time.sleep(0.001)
    with pytest.raises(StopIteration):
        next(ahead)
    ahead.close()
    assert len(inline) == len(got) == 20
    for (xa, ya), (xb, yb) in zip(inline, got, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert ahead.made_ahead >= 15  # the helper made them, not the training thread
    assert not ahead._thread.is_alive()


def test_the_training_thread_never_waits_for_a_stalled_helper(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 64, epochs=True), SPEC, 0.0, seed=1)
    release = threading.Event()

    def slow_on_the_helper(step, augmenter):
        if threading.current_thread().name == "batches-ahead":
            release.wait(DEADLINE_S)
        return make(step, augmenter)

    ahead = AheadBatches(slow_on_the_helper, SPEC, 10)
    got = [next(ahead) for _ in range(10)]  # all made inline while the helper is stuck
    release.set()
    ahead.close()
    assert ahead.made_ahead == 0
    expected = drain(InlineBatches(make, SPEC, 10))
    for (xa, _), (xb, _) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(xa, xb)


def test_closing_early_stops_the_helper(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=0)
    batches = AheadBatches(make, SPEC, 10_000)
    next(batches)
    batches.close()
    assert not batches._thread.is_alive()


def test_an_error_making_a_batch_reaches_the_training_thread(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=0)

    def broken(step, augmenter):
        if step == 2:
            raise RuntimeError("augmentation failed")
        return make(step, augmenter)

    batches = AheadBatches(broken, SPEC, 10)
    next(batches)
    next(batches)
    with pytest.raises(RuntimeError, match="augmentation failed"):
        next(batches)
    batches.close()


def test_without_new_options_the_batches_are_the_ones_the_trainer_always_drew(data):
    """The old loop: a permutation per epoch, then shift and noise, from the run's generator."""
    x, y = data
    plan = BatchPlan(len(x), 50, epochs=True)
    ours = drain(make_batches(x, y, plan, AugmentSpec(shift=1), 10.0, 0, 12, np.random.default_rng(5)), 12)
    rng = np.random.default_rng(5)
    for step in range(12):
        if step % 6 == 0:
            order = rng.permutation(len(x))
        batch = order[(step % 6) * 50 : (step % 6 + 1) * 50]
        xb = random_shift(x[batch], 1, rng).astype(np.float32) * np.float32(INPUT_SCALE)
        xb = add_noise(xb, 10.0, rng)
        np.testing.assert_array_equal(ours[step][0], xb)
        np.testing.assert_array_equal(ours[step][1], y[batch])
