"""Layers of the network, each with its forward and backward pass side by side.

A layer keeps what its backward pass needs from the last forward pass. Called as `layer.forward(x)`
and `layer.backward(dout)`, every pass returns a new array and never modifies the array it was
given, so a caller's data is never changed behind its back. Parameter gradients are written into
buffers the network owns (views into one flat gradient vector), so the optimiser can update every
parameter in a few whole-buffer operations.

The network's training step passes `out=`: a buffer it owns and reuses on every step, which may be
the input itself when the network owns that too (a hidden layer's ReLU works in place on the dense
layer's output, the backward passes of ReLU and dropout in place on the upstream gradient).
Training then allocates nothing per step: no fresh activation, mask or gradient arrays, and no
page faults on them. The arithmetic is the same either way, bit for bit.
"""

from __future__ import annotations

from typing import Literal, overload

import numpy as np


class Dense:
    """Affine layer `x @ w + b` whose parameters and gradients are views the network owns."""

    def __init__(self, w: np.ndarray, b: np.ndarray, grad_w: np.ndarray, grad_b: np.ndarray):
        self.w, self.b = w, b  # (fan_in, fan_out), (fan_out,)
        self.grad_w, self.grad_b = grad_w, grad_b
        self.x = np.empty((0, w.shape[0]), dtype=w.dtype)  # (batch, fan_in) of the last forward

    def forward(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`x @ w + b` (batch, fan_out), into `out` when given (must not overlap `x`)."""
        self.x = x  # (batch, fan_in), kept for backward
        out = np.matmul(x, self.w, out=out)  # (batch, fan_out)
        out += self.b  # in place on our own (fresh or owned) array
        return out

    @overload
    def backward(
        self, dout: np.ndarray, need_dx: Literal[True] = True, out: np.ndarray | None = None
    ) -> np.ndarray: ...

    @overload
    def backward(
        self, dout: np.ndarray, need_dx: bool, out: np.ndarray | None = None
    ) -> np.ndarray | None: ...

    def backward(
        self, dout: np.ndarray, need_dx: bool = True, out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Write dL/dw and dL/db into the gradient buffers; return dL/dx (skipped for the first layer).

        dL/dx (batch, fan_in) goes into `out` when given (must not overlap `dout`).
        """
        np.matmul(self.x.T, dout, out=self.grad_w)  # (fan_in, fan_out)
        np.add.reduce(dout, axis=0, out=self.grad_b)  # np.sum without its Python wrapper
        return np.matmul(dout, self.w.T, out=out) if need_dx else None  # (batch, fan_in)


class ReLU:
    """max(0, x); the gradient flows only where the input was positive."""

    def __init__(self) -> None:
        self.out = np.empty(0)  # the last forward's output
        self._zeros: np.ndarray | None = None  # (batch, units) of 0, reused with `out=`
        self._on: np.ndarray | None = None  # bool (batch, units): where the unit was on, reused

    def forward(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """max(0, x) into `out` when given (which may be `x` itself)."""
        if out is None:
            self.out = np.maximum(x, 0)
            return self.out
        # Against an array of zeros NumPy takes its vectorised loop: 2-3x faster than against
        # the scalar 0, which it broadcasts element by element.
        if self._zeros is None or self._zeros.shape != x.shape or self._zeros.dtype != x.dtype:
            self._zeros = np.zeros(x.shape, dtype=x.dtype)
        self.out = np.maximum(x, self._zeros, out=out)
        return self.out

    def backward(self, dout: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`dout` where the unit was on, 0 elsewhere; into `out` when given (which may be `dout`)."""
        if out is None:  # a fresh result array: the caller's `dout` stays as it was
            return np.multiply(dout, self.out > 0, dtype=dout.dtype)
        if self._on is None or self._on.shape != self.out.shape:
            self._on = np.empty(self.out.shape, dtype=bool)
        return np.multiply(dout, np.greater(self.out, 0, out=self._on), out=out)


class Dropout:
    """Inverted dropout: scale kept units by 1/(1-p) during training so inference needs no change."""

    def __init__(self, p: float, rng: np.random.Generator | None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        if rng is None and p > 0:
            raise ValueError("dropout needs a random generator")
        self.p, self.rng = p, rng
        self.mask: np.ndarray | None = None
        # reused by the `out=` form: float32 draws, where to keep, and the mask itself
        self._draw: np.ndarray | None = None
        self._keep: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool, out: np.ndarray | None = None) -> np.ndarray:
        """`x * mask` in training (into `out` when given, which may be `x`), else `x` itself."""
        if not train or self.p == 0.0:
            self.mask = None
            return x
        if out is None:
            assert self.rng is not None  # __init__ refuses p > 0 without one
            keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
            self.mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
            return x * self.mask
        # The same draws and the same mask as above, written into buffers this layer reuses.
        if self._mask is None or self._mask.shape != x.shape or self._mask.dtype != x.dtype:
            self._draw = np.empty(x.shape, dtype=np.float32)
            self._keep = np.empty(x.shape, dtype=bool)
            self._mask = np.empty(x.shape, dtype=x.dtype)
        assert self.rng is not None
        draw = self.rng.random(x.shape, dtype=np.float32, out=self._draw)
        keep = np.greater_equal(draw, self.p, out=self._keep)
        self.mask = np.divide(keep, x.dtype.type(1.0 - self.p), out=self._mask)
        return np.multiply(x, self.mask, out=out)

    def backward(self, dout: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`dout * mask` (into `out` when given, which may be `dout`), or `dout` when no mask was used."""
        if self.mask is None:
            return dout
        return np.multiply(dout, self.mask, out=out)


class SoftmaxCrossEntropy:
    """Softmax and cross-entropy fused: the gradient is simply (probabilities - target) / batch.

    The target is the one-hot label, or with `smoothing` e > 0 the label smoothing of Szegedy et al.
    (2016): 1 - e + e/K on the label and e/K elsewhere, which keeps a wide network from driving its
    logits ever further apart on digits it already reads.
    """

    def __init__(self, smoothing: float = 0.0) -> None:
        if not 0 <= smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.probs = np.empty((0, 0))  # (batch, classes) and (batch,) of the last forward
        self.labels = np.empty(0, dtype=np.int64)
        self._rows = np.arange(0)  # 0..batch-1, kept between calls of the same batch size

    def _row_index(self, n: int) -> np.ndarray:
        if len(self._rows) != n:
            self._rows = np.arange(n)
        return self._rows

    def forward(self, logits: np.ndarray, labels: np.ndarray, out: np.ndarray | None = None) -> float:
        """Mean cross-entropy of integer `labels` (batch,) under `logits` (batch, classes).

        The probabilities go into `out` when given (which may be `logits` itself).
        """
        self.probs = softmax(logits, out=out)
        self.labels = labels
        picked = self.probs[self._row_index(len(labels)), labels]  # a fresh (batch,) array
        tiny = np.finfo(picked.dtype).tiny
        np.maximum(picked, tiny, out=picked)
        np.log(picked, out=picked)
        # np.mean's arithmetic (sum in the array's dtype, then divide) without its Python wrapper
        loss = -(np.add.reduce(picked) / len(picked))
        if self.smoothing:
            classes = self.probs.shape[1]
            # cross-entropy against the uniform part of the target: mean over rows of -sum(log p) / K
            log_all = np.log(np.maximum(self.probs, tiny))
            uniform = -(np.add.reduce(log_all, axis=None) / (len(picked) * classes))
            loss = (1 - self.smoothing) * loss + self.smoothing * uniform
        return float(loss)

    def backward(self, out: np.ndarray | None = None) -> np.ndarray:
        """(probs - one_hot) / batch, (batch, classes), into `out` when given; `probs` stays intact."""
        if out is None:
            grad = self.probs.copy()  # (batch, classes)
        else:
            grad = out
            np.copyto(grad, self.probs)
        if self.smoothing:
            grad -= self.smoothing / grad.shape[1]
            grad[self._row_index(len(self.labels)), self.labels] -= 1 - self.smoothing
        else:
            grad[self._row_index(len(self.labels)), self.labels] -= 1
        grad /= len(self.labels)
        return grad


def softmax(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits cannot overflow.

    Into `out` when given (which may be `logits` itself), else a new array.
    """
    shifted = np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True), out=out)
    np.exp(shifted, out=shifted)
    shifted /= np.add.reduce(shifted, axis=1, keepdims=True)
    return shifted


def energy(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp of the logits: how strongly the network answers at all.

    Minus the free energy of Liu et al. (2020), "Energy-based out-of-distribution detection":
    inputs like the training digits get high values, things the network was never shown (clothes,
    scribbles) low ones, and unlike the top probability it does not saturate at 1. Computed
    shifted by the row maximum, so large logits cannot overflow.
    """
    top = np.maximum.reduce(logits, axis=1)
    return top + np.log(np.add.reduce(np.exp(logits - top[:, None]), axis=1))
