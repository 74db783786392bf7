"""Training batches: which images each step sees, made inline or ahead by a thread, always the same."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from mlp import INPUT_SCALE
from trainer.augment import AugmentSpec, random_shift
from trainer.batches import BatchPlan, InlineBatches, PrefetchedBatches, augmented_batches, make_batches
from trainer.noise import add_noise

SPEC = AugmentSpec(rotate=10, elastic=20, stroke=0.5, lowres=0.2)


@pytest.fixture(scope="module")
def data(digits):
    x, y = digits(300, seed=2)
    return x, y.astype(np.int64)


def take(batches, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        return [next(batches) for _ in range(n)]
    finally:
        batches.close()


def test_an_epoch_plan_visits_every_image_once_and_reshuffles_each_epoch():
    plan = BatchPlan(10, 3, epochs=True)
    rng = np.random.default_rng(0)
    first = np.concatenate([plan.indices(step, rng) for step in range(3)])
    second = np.concatenate([plan.indices(step, rng) for step in range(3, 6)])
    assert plan.per_epoch == 3 and len(set(first)) == 9 and len(set(second)) == 9
    assert not np.array_equal(first, second)
    draws = BatchPlan(10, 4, epochs=False).indices(0, np.random.default_rng(0))
    assert draws.shape == (4,) and draws.max() < 10


def test_prefetched_batches_are_the_inline_ones_in_order_and_end_with_the_run(data):
    x, y = data
    steps = 12

    def stream() -> Iterator:
        return augmented_batches(x, y, BatchPlan(len(x), 64, True), SPEC, 5.0, seed=3, steps=steps)

    inline = take(InlineBatches(stream()), steps)
    prefetched = PrefetchedBatches(stream())
    ahead = take(prefetched, steps)
    for (xa, ya), (xb, yb) in zip(inline, ahead, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert xa.dtype == np.float32 and xa.shape == (64, 784)
    assert not prefetched._thread.is_alive()
    empty = PrefetchedBatches(iter([]))
    with pytest.raises(StopIteration):
        next(empty)
    empty.close()


def test_closing_early_stops_the_thread(data):
    x, y = data
    batches = PrefetchedBatches(augmented_batches(x, y, BatchPlan(len(x), 32, True), SPEC, 0, 0, 10_000))
    next(batches)
    batches.close()
    assert not batches._thread.is_alive()


def test_an_error_while_preparing_reaches_the_training_thread():
    def broken() -> Iterator:
        yield np.zeros((2, 784), np.float32), np.zeros(2, np.int64)
        raise RuntimeError("augmentation failed")

    batches = PrefetchedBatches(broken())
    next(batches)
    with pytest.raises(RuntimeError, match="augmentation failed"):
        next(batches)
    batches.close()


def test_without_new_options_the_batches_are_the_ones_the_trainer_always_drew(data):
    """The old loop: a permutation per epoch, then shift and noise, from the run's generator."""
    x, y = data
    plan = BatchPlan(len(x), 50, epochs=True)
    ours = take(make_batches(x, y, plan, AugmentSpec(shift=1), 10.0, 0, 12, np.random.default_rng(5)), 12)
    rng = np.random.default_rng(5)
    for step in range(12):
        if step % 6 == 0:
            order = rng.permutation(len(x))
        batch = order[(step % 6) * 50 : (step % 6 + 1) * 50]
        xb = random_shift(x[batch], 1, rng).astype(np.float32) * np.float32(INPUT_SCALE)
        xb = add_noise(xb, 10.0, rng)
        np.testing.assert_array_equal(ours[step][0], xb)
        np.testing.assert_array_equal(ours[step][1], y[batch])
