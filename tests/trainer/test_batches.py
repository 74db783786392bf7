"""Training batches: which images each step sees, made inline or ahead by a helper process, the same."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from mlp import INPUT_SCALE
from trainer import batches_ahead
from trainer.augment import Augmenter, AugmentSpec
from trainer.augment_geometry import random_shift
from trainer.batches import BatchMaker, BatchPlan, InlineBatches
from trainer.batches_ahead import AheadBatches, make_batches
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


def wait_until_ready(ahead: AheadBatches, step: int) -> None:
    """Poll (with a deadline) until the helper has `step` ready: a fresh process takes a second to start."""
    deadline = time.monotonic() + DEADLINE_S
    while step not in ahead._ready and time.monotonic() < deadline:
        ahead._collect()
        time.sleep(0.001)


def same_batches(got, expected) -> None:
    assert len(got) == len(expected)
    for (xa, ya), (xb, yb) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_batches_made_ahead_are_the_inline_ones_in_order_and_end_with_the_run(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 64, epochs=True), SPEC, 5.0, seed=3)
    inline = drain(InlineBatches(make, SPEC, 20))
    ahead = AheadBatches(make, 20)
    got = [next(ahead)]
    for step in range(1, 20):
        wait_until_ready(ahead, step)  # let the helper catch up
        got.append(next(ahead))
    with pytest.raises(StopIteration):
        next(ahead)
    ahead.close()
    same_batches(got, inline)
    assert ahead.made_ahead == 19  # the helper made them, not the training thread
    assert not ahead._process.is_alive()


def test_the_helper_says_when_it_is_ready(data):
    x, y = data
    ahead = AheadBatches(BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=1), 5)
    assert not ahead.helper_ready  # a fresh process: still starting
    deadline = time.monotonic() + DEADLINE_S
    while not ahead.helper_ready and time.monotonic() < deadline:
        ahead._collect()
        time.sleep(0.001)
    ahead.close()
    assert ahead.helper_ready


def test_the_training_thread_never_waits_for_a_stalled_helper(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 64, epochs=True), SPEC, 0.0, seed=1)
    ahead = AheadBatches(make, 10)
    os.kill(ahead._process.pid, signal.SIGSTOP)  # still starting: it has made nothing
    try:
        got = [next(ahead) for _ in range(10)]  # all made inline while the helper is stuck
    finally:
        os.kill(ahead._process.pid, signal.SIGCONT)
        ahead.close()
    assert ahead.made_ahead == 0
    same_batches(got, drain(InlineBatches(make, SPEC, 10)))


def test_the_bank_fills_with_the_next_steps_and_says_how_full_it_is(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=4)
    ahead = AheadBatches(make, 20, ahead=4)
    try:
        assert ahead.banked() == 0  # nothing asked yet
        got = [next(ahead)]  # step 0, and steps 1-4 asked of the helper
        deadline = time.monotonic() + DEADLINE_S
        while ahead.banked() < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ahead.banked() == 1 and sorted(ahead._ready) == [1, 2, 3, 4]
        got += [next(ahead), next(ahead)]  # spends two, asks for two more
        assert ahead.banked() <= 1 and all(step >= 3 for step in ahead._ready)
        got += [next(ahead) for _ in range(17)]
        assert ahead.banked() == 0  # the run is over: nothing left to bank
    finally:
        ahead.close()
    same_batches(got, drain(InlineBatches(make, SPEC, 20)))


def test_a_paused_helper_makes_nothing_and_resumes(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=5)
    ahead = AheadBatches(make, 12)
    ahead.set_helper(False)
    got = [next(ahead) for _ in range(4)]
    assert ahead.made_ahead == 0 and not ahead._ready
    ahead.set_helper(True)
    for step in range(4, 12):
        wait_until_ready(ahead, step)
        got.append(next(ahead))
    ahead.close()
    assert ahead.made_ahead == 8
    same_batches(got, drain(InlineBatches(make, SPEC, 12)))


def test_a_helper_that_dies_leaves_the_training_thread_to_make_every_batch(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=6)
    ahead = AheadBatches(make, 10)
    got = [next(ahead)]
    wait_until_ready(ahead, 1)
    ahead._process.kill()
    ahead._process.join(DEADLINE_S)
    got += [next(ahead) for _ in range(9)]
    assert not ahead.helper_alive
    ahead.close()
    same_batches(got, drain(InlineBatches(make, SPEC, 10)))


def test_closing_early_stops_the_helper_and_frees_its_shared_memory(data):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=0)
    batches = AheadBatches(make, 10_000)
    next(batches)
    names = [memory.name for memory in batches._memory]
    batches.close()
    assert not batches._process.is_alive()
    for name in names:
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)


def test_an_error_making_a_batch_reaches_the_training_thread(data, monkeypatch):
    x, y = data
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=0)
    batches = AheadBatches(make, 10)
    batches.set_helper(False)  # the training thread makes them all
    original = BatchMaker.__call__

    def broken(self, step, augmenter):
        if step == 2:
            raise RuntimeError("augmentation failed")
        return original(self, step, augmenter)

    monkeypatch.setattr(BatchMaker, "__call__", broken)
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


def _ahead_in_a_daemonic_process(x, y, out) -> None:
    make = BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=2)
    ahead = AheadBatches(make, 6)
    first = next(ahead)
    wait_until_ready(ahead, 1)
    rest = [next(ahead) for _ in range(5)]
    ahead.close()
    out.put((ahead.made_ahead, [b[0] for b in [first, *rest]]))


def test_a_daemonic_training_process_such_as_a_services_job_gets_a_helper_too(data):
    x, y = data
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    job = context.Process(target=_ahead_in_a_daemonic_process, args=(x, y, out), daemon=True)
    job.start()
    made_ahead, images = out.get(timeout=DEADLINE_S)
    job.join(DEADLINE_S)
    assert job.exitcode == 0 and made_ahead >= 1
    expected = drain(
        InlineBatches(BatchMaker(x, y, BatchPlan(len(x), 32, epochs=True), SPEC, 0.0, seed=2), SPEC, 6)
    )
    for got, (want, _) in zip(images, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_without_room_in_shared_memory_the_training_thread_makes_every_batch(data, monkeypatch):
    x, y = data

    class Full:
        f_bavail, f_frsize = 1, 4096

    monkeypatch.setattr(batches_ahead.os, "statvfs", lambda path: Full())
    plan = BatchPlan(len(x), 32, epochs=True)
    batches = make_batches(x, y, plan, SPEC, 0.0, 0, 5, np.random.default_rng(0))
    assert isinstance(batches, InlineBatches)  # not a SIGBUS writing past a full /dev/shm
    batches.close()
