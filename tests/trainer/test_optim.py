"""Optimiser steps and learning-rate schedules against values worked out by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mlp import MLP
from trainer.optim import SGD, Adam, Momentum, Schedule, make_optimizer
from trainer.training import _weight_slices

G1 = [0.5, -1.0, 2.0]
G2 = [1.0, 1.0, -1.0]


def run(optimizer, grads_per_step, lr, start=(1.0, 2.0, 3.0)) -> np.ndarray:
    """Apply one step per gradient to float32 params; also check that no gradient was modified."""
    params = np.array(start, dtype=np.float32)
    for g in grads_per_step:
        grads = np.array(g, dtype=np.float32)
        before = grads.copy()
        optimizer.step(params, grads, lr)
        np.testing.assert_array_equal(grads, before)
    return params


def test_sgd():
    # p - lr * g = [1 - 0.05, 2 + 0.1, 3 - 0.2]
    np.testing.assert_allclose(run(SGD(3), [G1], 0.1), [0.95, 2.1, 2.8], rtol=1e-6)


def test_momentum_pytorch_convention():
    # step 1: buf = g1 = [.5, -1, 2];              p = [1, 2, 3] - .1 * buf = [.95, 2.1, 2.8]
    # step 2: buf = .9 * buf + g2 = [1.45, .1, .8]; p = [.95 - .145, 2.1 - .01, 2.8 - .08]
    optimizer = Momentum(3, momentum=0.9)
    np.testing.assert_allclose(run(optimizer, [G1], 0.1), [0.95, 2.1, 2.8], rtol=1e-6)
    np.testing.assert_allclose(run(Momentum(3, momentum=0.9), [G1, G2], 0.1), [0.805, 2.09, 2.72], rtol=1e-6)


def test_nesterov():
    # step 1: buf = g1;             update = g1 + .9 * buf = [.95, -1.9, 3.8]; p = [.905, 2.19, 2.62]
    # step 2: buf = [1.45, .1, .8]; update = g2 + .9 * buf = [2.305, 1.09, -.28]
    #         p = [.905 - .2305, 2.19 - .109, 2.62 + .028]
    optimizer = Momentum(3, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(run(optimizer, [G1], 0.1), [0.905, 2.19, 2.62], rtol=1e-6)
    optimizer = Momentum(3, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(run(optimizer, [G1, G2], 0.1), [0.6745, 2.081, 2.648], rtol=1e-6)


def test_adam_two_steps_textbook_formula():
    # lr .01, b1 .9, b2 .999, eps 1e-8:
    # t=1: m = .1 g1 = [.05, -.1, .2], v = .001 g1^2; m_hat = g1, v_hat = g1^2,
    #      so the step is lr * sign(g1): p = [.99, 2.01, 2.99]
    # t=2: m = .9 m + .1 g2 = [.145, .01, .08], v = .999 v + .001 g2^2 = [.00124975, .001999, .004996]
    #      m_hat = m / (1 - .9^2) = [.763158, .0526316, .421053]
    #      v_hat = v / (1 - .999^2) = [.625188, 1, 2.49925]
    #      p -= .01 * m_hat / (sqrt(v_hat) + eps) = [.0096518, .000526316, .00266337]
    np.testing.assert_allclose(run(Adam(3), [G1], 0.01), [0.99, 2.01, 2.99], rtol=1e-6)
    optimizer = Adam(3)
    np.testing.assert_allclose(
        run(optimizer, [G1, G2], 0.01), [0.98034818, 2.00947368, 2.98733663], rtol=2e-6
    )
    assert optimizer.t == 2
    np.testing.assert_allclose(optimizer.m, [0.145, 0.01, 0.08], rtol=1e-5)
    np.testing.assert_allclose(optimizer.v, [0.00124975, 0.001999, 0.004996], rtol=1e-5)


def test_weight_decay_applies_to_the_decay_slices_only():
    # slice 0:2 is "weights": g + .1 p = [.5 + .1, -1 + .2]; the rest ("biases") gets plain g
    optimizer = SGD(4, weight_decay=0.1, decay_slices=[slice(0, 2)])
    params = run(optimizer, [[0.5, -1.0, 2.0, 1.0]], 0.1, start=(1.0, 2.0, 3.0, 4.0))
    np.testing.assert_allclose(params, [0.94, 2.08, 2.8, 3.9], rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
def test_weight_decay_on_a_network_shrinks_weights_and_leaves_biases(name):
    net = MLP([6, 5, 3], rng=np.random.default_rng(0))
    net.params["b1"][...] = 1.0
    net.params["b2"][...] = -1.0
    slices = _weight_slices(net)
    assert [net.flat_params[s].size for s in slices] == [30, 15]
    np.testing.assert_array_equal(net.flat_params[slices[1]], net.params["w2"].ravel())
    optimizer = make_optimizer(name, net.num_params, weight_decay=0.1, decay_slices=slices)
    before = {k: v.copy() for k, v in net.params.items()}
    grads = np.zeros(net.num_params, dtype=np.float32)  # only the decay can move anything
    for _ in range(3):
        optimizer.step(net.flat_params, grads, 0.1)
    assert not grads.any()
    np.testing.assert_array_equal(net.params["b1"], before["b1"])
    np.testing.assert_array_equal(net.params["b2"], before["b2"])
    for w in ("w1", "w2"):
        assert np.abs(net.params[w]).sum() < np.abs(before[w]).sum()  # pulled towards zero


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
def test_make_optimizer_steps_downhill_and_leaves_grads_alone(name):
    optimizer = make_optimizer(name, 3, weight_decay=0.01, decay_slices=[slice(0, 3)])
    params = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    for _ in range(50):  # minimise |p|^2 / 2, whose gradient is p itself
        grads = params.copy()
        before = grads.copy()
        optimizer.step(params, grads, 0.05)
        np.testing.assert_array_equal(grads, before)
    assert np.abs(params).max() < 1.0


def test_make_optimizer_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", 3)


# -- schedules ----------------------------------------------------------------------------------


def test_constant_schedule():
    schedule = Schedule("constant", 0.1, 100)
    assert [schedule(s) for s in (0, 1, 50, 99, 500)] == [0.1] * 5


def test_cosine_end_points_and_midpoint():
    schedule = Schedule("cosine", 1.0, 100, final_fraction=0.1)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(50) == pytest.approx(0.55)  # halfway between 1.0 and the floor 0.1
    assert schedule(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule(100) == pytest.approx(0.1)
    assert schedule(1000) == pytest.approx(0.1)  # stays at the floor
    values = [schedule(s) for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # never goes up
    assert Schedule("cosine", 2.0, 10)(10) == pytest.approx(0.0)  # default floor is zero


def test_step_decay():
    schedule = Schedule("step", 1.0, 90, step_every=30, gamma=0.1)
    assert [schedule(s) for s in (0, 29, 30, 59, 60, 89)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_linear_warmup_then_the_schedule():
    schedule = Schedule("cosine", 1.0, 110, warmup_steps=10)
    assert [schedule(s) for s in range(10)] == pytest.approx([0.1 * (s + 1) for s in range(10)])
    assert schedule(10) == pytest.approx(1.0)  # the cosine starts after the warm-up
    assert schedule(60) == pytest.approx(0.5)  # its midpoint is 50 steps later
    assert schedule(110) == pytest.approx(0.0)
    constant = Schedule("constant", 0.5, 100, warmup_steps=4)
    assert [constant(s) for s in range(6)] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        Schedule("linear", 0.1, 10)


def test_the_weight_average_follows_the_weights_and_swaps_in_and_out():
    from trainer.optim import WeightAverage

    params = np.zeros(3, np.float32)
    average = WeightAverage(params, decay=0.9, every=2)
    for step in range(400):
        params[...] = 1.0 if step < 200 else 3.0  # the weights move, then settle
        average.update(step, params)
    assert average.average == pytest.approx(np.full(3, 3.0), abs=1e-3)  # it caught up
    params[...] = 5.0
    with average.swapped_into(params):
        assert params == pytest.approx(average.average)
    assert (params == 5.0).all()  # the training weights are back


def test_training_with_a_weight_average_publishes_the_average(digits, one_blas_thread):
    from trainer.config import TrainConfig
    from trainer.training import train

    x, y = digits(600, seed=0)
    config = TrainConfig(hidden=(16,), epochs=40, val_size=100, ema=0.99, seed=1)
    result = train(config, x, y, x[:200], y[:200], prefetch=False)
    plain = train(config.replace(ema=0.0), x, y, x[:200], y[:200], prefetch=False)
    assert not np.array_equal(result.net.flat_params, plain.net.flat_params)  # the average, not the last step
    assert result.test.accuracy > 0.9 and plain.test.accuracy > 0.9  # and it reads the digits
