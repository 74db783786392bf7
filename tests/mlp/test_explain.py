"""gradient x input: the map that `?explain=1` draws over the digit the network saw."""

from __future__ import annotations

import numpy as np
import pytest

from mlp import MLP, gradient_times_input


def zero_bias_net(seed: int) -> MLP:
    net = MLP([784, 32, 16, 10], rng=np.random.default_rng(seed))
    for name, param in net.params.items():
        if name.startswith("b"):
            param[...] = 0
    return net


def test_with_zero_biases_each_map_sums_to_the_logit_it_explains():
    net = zero_bias_net(0)
    pixels = np.random.default_rng(1).integers(0, 256, (5, 784)).astype(np.uint8)
    maps, classes = gradient_times_input(net, pixels)
    logits = net.infer(pixels)
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))
    assert maps.shape == (5, 784) and maps.dtype == np.float32 and np.isfinite(maps).all()
    np.testing.assert_allclose(maps.sum(axis=1), logits[np.arange(5), classes], rtol=1e-4)


def test_it_matches_central_differences_of_the_logit():
    net = MLP([784, 20, 10], rng=np.random.default_rng(2))
    net.params["b1"][...] = np.random.default_rng(3).normal(0, 0.1, 20)
    x = np.random.default_rng(4).uniform(0, 1, (1, 784)).astype(np.float32)
    maps, (answer,) = gradient_times_input(net, x, np.array([7]))
    assert answer == 7
    eps = 1e-2
    for pixel in (0, 100, 400, 783):
        up, down = x.copy(), x.copy()
        up[0, pixel] += eps
        down[0, pixel] -= eps
        slope = (net.infer(up)[0, 7] - net.infer(down)[0, 7]) / (2 * eps)
        assert maps[0, pixel] == pytest.approx(slope * x[0, pixel], abs=1e-3)


def test_an_empty_pixel_gets_nothing_and_the_one_wired_to_the_answer_gets_the_most():
    net = MLP([784, 8, 10], init=None)  # all zero: only the wiring below
    net.params["w1"][300, 0] = 2.0  # pixel 300 feeds hidden unit 0 ...
    net.params["w2"][0, 3] = 1.5  # ... which feeds class 3
    net.params["w1"][500, 1] = 0.1  # pixel 500: a weak path to class 3
    net.params["w2"][1, 3] = 0.1
    net.params["w1"][:, 2] = 0.01  # every pixel a little towards class 5
    net.params["w2"][2, 5] = 1.0
    pixels = np.zeros((1, 784), dtype=np.uint8)
    pixels[0, [300, 500, 10, 20]] = 255
    maps, (answer,) = gradient_times_input(net, pixels)
    assert answer == 3
    assert maps[0].argmax() == 300
    assert maps[0, 300] > 10 * maps[0, 500] > 0
    assert np.count_nonzero(maps[0]) == 2  # pixels 10 and 20 push only class 5; empty pixels nothing
