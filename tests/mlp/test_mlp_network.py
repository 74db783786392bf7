"""The network's structure: sizes, flat buffers and their views, initialisation, input scaling, predict."""

from __future__ import annotations

import numpy as np
import pytest

from mlp import MLP, as_input, param_names, softmax, validate_sizes


def test_param_names_and_shapes():
    assert param_names(3) == ["w1", "b1", "w2", "b2", "w3", "b3"]
    assert MLP.param_shapes([784, 100, 10]) == {"w1": (784, 100), "b1": (100,), "w2": (100, 10), "b2": (10,)}


@pytest.mark.parametrize("sizes", [[], [784], [784, 0, 10], [784, -5, 10], [784, 100_000, 10]])
def test_validate_sizes_refuses_nonsense(sizes):
    with pytest.raises(ValueError, match="size"):
        validate_sizes(sizes)


def test_params_and_grads_are_views_into_one_flat_float32_buffer_each():
    net = MLP([784, 30, 20, 10], rng=np.random.default_rng(0))
    assert net.num_params == 784 * 30 + 30 + 30 * 20 + 20 + 20 * 10 + 10
    assert net.flat_params.dtype == net.flat_grads.dtype == np.float32
    for name in net.params:
        assert np.shares_memory(net.params[name], net.flat_params)
        assert np.shares_memory(net.grads[name], net.flat_grads)
    net.flat_params[:] = 0.5  # what an optimiser does: the layers see it through the views
    assert (net.dense[1].w == 0.5).all() and (net.params["b3"] == 0.5).all()


def test_initialisation_is_seeded_he_or_a_fixed_scale_with_zero_biases():
    a = MLP([784, 400, 10], rng=np.random.default_rng(3))
    b = MLP([784, 400, 10], rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert a.params["w1"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert a.params["w2"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    assert not a.params["b1"].any() and not a.params["b2"].any()
    scaled = MLP([784, 400, 10], init=0.1, rng=np.random.default_rng(3))
    assert scaled.params["w1"].std() == pytest.approx(0.1, rel=0.02)


def test_as_input_scales_uint8_and_flattens_images():
    pixels = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    out = as_input(pixels)
    assert out.dtype == np.float32 and out.shape == (1, 4)
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.2, 0.4]], rtol=1e-6)
    floats = np.array([[0.25, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(as_input(floats), floats)  # already scaled: left as is


def test_predict_agrees_for_uint8_and_scaled_float_input_and_across_batches():
    net = MLP([784, 32, 10], rng=np.random.default_rng(0))
    pixels = np.random.default_rng(1).integers(0, 256, (50, 784), dtype=np.uint8)
    probs = net.predict_proba(pixels)
    assert probs.shape == (50, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(net.predict_proba(pixels.astype(np.float32) / 255), probs, rtol=1e-5)
    # BLAS may pick other kernels for other batch sizes: equal up to float32 rounding
    np.testing.assert_allclose(net.predict_proba(pixels, batch_size=7), probs, rtol=1e-5)
    np.testing.assert_array_equal(net.predict(pixels), probs.argmax(axis=1))
    np.testing.assert_allclose(softmax(net.forward(as_input(pixels))), probs, rtol=1e-6)


def test_dropout_acts_only_in_training():
    net = MLP([784, 64, 10], dropout=0.5, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(0, 1, (4, 784)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), net.forward(x))  # inference is deterministic
    assert not np.array_equal(net.forward(x, train=True), net.forward(x))


def test_load_params_copies_and_checks_shapes():
    a = MLP([784, 16, 10], rng=np.random.default_rng(0))
    b = MLP([784, 16, 10], rng=np.random.default_rng(1))
    b.load_params(a.params)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    a.params["w1"][0, 0] += 1  # a copy, not shared memory
    assert a.params["w1"][0, 0] != b.params["w1"][0, 0]
    with pytest.raises(ValueError, match=r"w1: expected shape \(784, 16\)"):
        b.load_params({**a.params, "w1": np.zeros((16, 784), np.float32)})


def test_inference_reads_only_the_rows_of_w1_for_inked_pixels():
    """Serving skips the blank pixels' rows of w1: same probabilities as the full forward pass."""
    net = MLP([784, 64, 32, 10], rng=np.random.default_rng(0))
    digits = np.zeros((3, 28, 28), dtype=np.uint8)
    digits[0, 6:22, 12:15] = 255  # a "1"
    digits[1, 8:20, 9:19] = np.random.default_rng(1).integers(0, 256, (12, 10), dtype=np.uint8)
    digits[2, 14, 14] = 7  # almost blank
    full = softmax(net.forward(as_input(digits)))
    np.testing.assert_allclose(net.predict_proba(digits), full, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.predict_proba(digits[1:2]), full[1:2], rtol=1e-5, atol=1e-7)
    # Poison the rows of pixels no digit inks: had they been read, the answer would be NaN.
    blank = ~digits.reshape(3, -1).any(axis=0)
    net.params["w1"][blank] = np.nan
    np.testing.assert_allclose(net.predict_proba(digits), full, rtol=1e-5, atol=1e-7)
    assert np.isnan(net.forward(as_input(digits))).all()  # the full pass reads them


def test_inference_of_a_blank_image_is_the_biases_alone():
    net = MLP([784, 16, 10], rng=np.random.default_rng(2))
    net.params["b1"][...] = np.linspace(-1, 1, 16)
    want = softmax((np.maximum(net.params["b1"], 0) @ net.params["w2"] + net.params["b2"])[None])
    np.testing.assert_allclose(net.predict_proba(np.zeros((1, 784), np.uint8)), want, rtol=1e-6)


def test_init_none_leaves_zeros_for_a_loader_and_dropout_still_draws():
    net = MLP([784, 32, 10], init=None)
    assert not net.flat_params.any()
    with_dropout = MLP([784, 32, 10], init=None, dropout=0.5)
    x = np.ones((2, 784), dtype=np.float32)
    with_dropout.params["w1"][...] = 1.0
    hidden = with_dropout.dropouts[0].forward(
        with_dropout.relus[0].forward(with_dropout.dense[0].forward(x)), True
    )
    assert set(np.unique(hidden)) == {0.0, 784.0 * 2}  # units dropped or scaled by 1 / (1 - p)


def test_energy_is_the_log_sum_exp_and_does_not_overflow():
    from mlp import energy

    logits = np.array([[0.0, 0.0], [1000.0, 1000.0], [-3.0, 2.0]], dtype=np.float32)
    got = energy(logits)
    assert np.allclose(got[[0, 2]], np.log(np.exp(logits[[0, 2]].astype(np.float64)).sum(1)))
    assert got[1] == pytest.approx(1000 + np.log(2))
    assert np.isfinite(got).all()
