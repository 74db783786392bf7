"""Every backward pass against central differences, in float64, and the arrays it must leave alone."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import mlp.network
from mlp import MLP, Dense, Dropout, ReLU, SoftmaxCrossEntropy

EPS = 1e-6
TOLERANCE = 1e-6


def numerical_grad(f: Callable[[], float], x: np.ndarray) -> np.ndarray:
    """d f / d x by central differences, perturbing `x` in place one element at a time."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        plus = f()
        flat[i] = old - EPS
        minus = f()
        flat[i] = old
        out[i] = (plus - minus) / (2 * EPS)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    assert analytic.shape == numeric.shape
    assert np.abs(numeric).max() > 1e-4, "a gradient check on an all-zero gradient checks nothing"
    return float(np.linalg.norm(analytic - numeric) / (np.linalg.norm(analytic) + np.linalg.norm(numeric)))


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random values with |v| >= 0.05, so no ReLU input sits within EPS of its kink."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.05, 1.5, size=shape)


def float64_mlp(monkeypatch: pytest.MonkeyPatch, sizes, **kwargs) -> MLP:
    """The real MLP class with its flat buffers in float64 (the module constant decides the dtype)."""
    with monkeypatch.context() as m:
        m.setattr(mlp.network, "DTYPE", np.float64)
        net = MLP(sizes, **kwargs)
    assert net.flat_params.dtype == np.float64 and net.params["w1"].dtype == np.float64
    return net


# -- layers -----------------------------------------------------------------------------------


def make_dense(rng: np.random.Generator, fan_in: int = 5, fan_out: int = 4) -> Dense:
    w, b = rng.standard_normal((fan_in, fan_out)), rng.standard_normal(fan_out)
    return Dense(w, b, np.zeros_like(w), np.zeros_like(b))


def test_dense_gradients_match_central_differences():
    rng = np.random.default_rng(0)
    dense = make_dense(rng)
    x = rng.standard_normal((3, 5))
    upstream = rng.standard_normal((3, 4))  # L = sum(out * upstream), so dL/dout = upstream

    def loss() -> float:
        return float(np.sum(dense.forward(x) * upstream))

    loss()
    dx = dense.backward(upstream.copy())
    assert relative_error(dx, numerical_grad(loss, x)) < TOLERANCE
    assert relative_error(dense.grad_w.copy(), numerical_grad(loss, dense.w)) < TOLERANCE
    assert relative_error(dense.grad_b.copy(), numerical_grad(loss, dense.b)) < TOLERANCE


def test_dense_backward_writes_into_the_given_buffers_and_can_skip_dx():
    rng = np.random.default_rng(1)
    dense = make_dense(rng)
    grad_w, grad_b = dense.grad_w, dense.grad_b
    x, dout = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    dense.forward(x)
    assert dense.backward(dout, need_dx=False) is None
    assert dense.grad_w is grad_w and dense.grad_b is grad_b  # the network's views, not new arrays
    np.testing.assert_allclose(grad_w, x.T @ dout)
    np.testing.assert_allclose(grad_b, dout.sum(axis=0))


def test_relu_gradient_matches_central_differences():
    rng = np.random.default_rng(2)
    relu = ReLU()
    x = away_from_zero(rng, (4, 6))
    upstream = rng.standard_normal((4, 6))

    def loss() -> float:
        return float(np.sum(relu.forward(x) * upstream))

    loss()
    dx = relu.backward(upstream)
    assert relative_error(dx, numerical_grad(loss, x)) < TOLERANCE
    np.testing.assert_array_equal(dx[x < 0], 0.0)  # no gradient where the unit was off


def test_dropout_gradient_with_a_fixed_mask_matches_central_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 8))
    upstream = rng.standard_normal((5, 8))
    dropout = Dropout(0.4, np.random.default_rng(7))

    def loss() -> float:
        dropout.rng = np.random.default_rng(7)  # the same mask on every evaluation
        return float(np.sum(dropout.forward(x, train=True) * upstream))

    loss()
    mask = dropout.mask.copy()
    assert 0 < np.count_nonzero(mask) < mask.size  # some units dropped, some kept
    np.testing.assert_allclose(mask[mask != 0], 1 / 0.6)  # inverted dropout scales the kept ones
    dx = dropout.backward(upstream)
    assert relative_error(dx, numerical_grad(loss, x)) < TOLERANCE
    np.testing.assert_array_equal(dropout.mask, mask)


def test_dropout_is_the_identity_at_inference_and_with_p_zero():
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(Dropout(0.5, np.random.default_rng(0)).forward(x, train=False), x)
    zero = Dropout(0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(zero.forward(x, train=True), x)
    np.testing.assert_array_equal(zero.backward(x), x)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_refuses_probabilities_outside_zero_to_one(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p, np.random.default_rng(0))


def test_softmax_cross_entropy_gradient_matches_central_differences():
    rng = np.random.default_rng(4)
    layer = SoftmaxCrossEntropy()
    logits = rng.standard_normal((6, 10)) * 3
    labels = np.array([0, 3, 9, 3, 5, 1])

    def loss() -> float:
        return layer.forward(logits, labels)

    value = loss()
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert value == pytest.approx(-np.mean(np.log(probs[np.arange(6), labels])), rel=1e-12)
    grad = layer.backward()
    assert relative_error(grad, numerical_grad(loss, logits)) < TOLERANCE
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)  # each row: probs sum 1, minus one-hot


def test_label_smoothing_loss_is_cross_entropy_to_the_smoothed_target_and_its_gradient_checks():
    rng = np.random.default_rng(7)
    layer = SoftmaxCrossEntropy(smoothing=0.1)
    logits = rng.standard_normal((6, 10)) * 3
    labels = np.array([0, 3, 9, 3, 5, 1])

    def loss() -> float:
        return layer.forward(logits, labels)

    value = loss()
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    target = np.full((6, 10), 0.01)
    target[np.arange(6), labels] = 0.91
    assert value == pytest.approx(-np.mean((target * np.log(probs)).sum(axis=1)), rel=1e-12)
    grad = layer.backward()
    np.testing.assert_allclose(grad, (probs - target) / 6, atol=1e-15)
    assert relative_error(grad, numerical_grad(loss, logits)) < TOLERANCE


@pytest.mark.parametrize("smoothing", [-0.1, 1.0])
def test_label_smoothing_outside_zero_to_one_is_refused(smoothing):
    with pytest.raises(ValueError, match="label smoothing"):
        SoftmaxCrossEntropy(smoothing=smoothing)


def test_softmax_cross_entropy_survives_huge_logits():
    layer = SoftmaxCrossEntropy()
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 2000.0, 0.0]])
    loss = layer.forward(logits, np.array([0, 0]))
    # row 1 is certain and right (loss 0); row 2's probability underflows and is clamped, not -log(0)
    assert loss == pytest.approx(-np.log(np.finfo(np.float64).tiny) / 2)
    np.testing.assert_allclose(layer.backward(), [[0.0, 0.0, 0.0], [-0.5, 0.5, 0.0]], atol=1e-300)


# -- the whole network --------------------------------------------------------------------------


@pytest.mark.parametrize(("dropout", "smoothing"), [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2)])
def test_mlp_loss_and_grads_match_central_differences(monkeypatch, dropout, smoothing):
    sizes = [12, 9, 7, 4]  # two hidden layers
    net = float64_mlp(
        monkeypatch, sizes, dropout=dropout, label_smoothing=smoothing, rng=np.random.default_rng(5)
    )
    rng = np.random.default_rng(6)
    for name in net.params:
        if name.startswith("b"):
            net.params[name][...] = rng.standard_normal(net.params[name].shape) * 0.1
    x = rng.uniform(0, 1, (8, 12))
    labels = rng.integers(0, 4, 8)

    def loss() -> float:
        for i, layer in enumerate(net.dropouts):
            layer.rng = np.random.default_rng(100 + i)  # same masks every time
        return net.loss_and_grads(x, labels)

    loss()
    if dropout:
        assert all(0 < np.count_nonzero(d.mask) < d.mask.size for d in net.dropouts)
    analytic = {name: grad.copy() for name, grad in net.grads.items()}
    for name, param in net.params.items():  # views into the flat buffer: perturbing them perturbs the net
        assert relative_error(analytic[name], numerical_grad(loss, param)) < TOLERANCE, name


def test_mlp_gradient_is_the_one_of_the_mean_loss_not_the_sum(monkeypatch):
    net = float64_mlp(monkeypatch, [5, 4, 3], rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, labels = rng.uniform(0, 1, (4, 5)), rng.integers(0, 3, 4)
    net.loss_and_grads(x, labels)
    once = net.flat_grads.copy()
    net.loss_and_grads(np.concatenate([x, x]), np.concatenate([labels, labels]))
    np.testing.assert_allclose(net.flat_grads, once, rtol=1e-12)  # duplicating the batch changes nothing


# -- nothing the caller passed in is modified ---------------------------------------------------


def test_layer_passes_leave_their_inputs_alone():
    rng = np.random.default_rng(8)
    x, dout = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    dense = make_dense(rng)
    x_before, dout_before = x.copy(), dout.copy()
    dense.forward(x)
    dense.backward(dout)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dout, dout_before)

    for layer in (ReLU(), Dropout(0.5, np.random.default_rng(0))):
        h = away_from_zero(rng, (3, 4))
        g = rng.standard_normal((3, 4))
        h_before, g_before = h.copy(), g.copy()
        out = layer.forward(h) if isinstance(layer, ReLU) else layer.forward(h, train=True)
        dh = layer.backward(g)
        np.testing.assert_array_equal(h, h_before)
        np.testing.assert_array_equal(g, g_before)
        assert not np.shares_memory(dh, g) and not np.shares_memory(out, h)

    loss_layer = SoftmaxCrossEntropy()
    logits, labels = rng.standard_normal((3, 4)), np.array([0, 1, 3])
    logits_before, labels_before = logits.copy(), labels.copy()
    loss_layer.forward(logits, labels)
    first = loss_layer.backward()
    second = loss_layer.backward()  # backward must not eat the probabilities it keeps
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(logits, logits_before)
    np.testing.assert_array_equal(labels, labels_before)


def test_network_passes_leave_the_callers_arrays_alone():
    net = MLP([784, 16, 8, 10], dropout=0.2, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (5, 784), dtype=np.uint8)
    floats = pixels.astype(np.float32) / 255
    labels = rng.integers(0, 10, 5)
    copies = [a.copy() for a in (pixels, floats, labels)]
    net.loss_and_grads(floats, labels)
    net.forward(floats)
    net.predict(pixels)
    net.predict_proba(floats)
    net.predict(pixels.reshape(5, 28, 28))
    for array, before in zip((pixels, floats, labels), copies, strict=True):
        np.testing.assert_array_equal(array, before)
