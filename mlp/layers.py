"""Layers of the network, each with its forward and backward pass side by side.

A layer keeps what its backward pass needs from the last forward pass. Backward passes return a
new array for the upstream gradient and never modify the array they were given, so a caller's
data is never changed behind its back. Parameter gradients are written into buffers the network
owns (views into one flat gradient vector), so the optimiser can update every parameter in a few
whole-buffer operations.
"""

from __future__ import annotations

import numpy as np


class Dense:
    """Affine layer `x @ w + b` whose parameters and gradients are views the network owns."""

    def __init__(self, w: np.ndarray, b: np.ndarray, grad_w: np.ndarray, grad_b: np.ndarray):
        self.w, self.b = w, b  # (fan_in, fan_out), (fan_out,)
        self.grad_w, self.grad_b = grad_w, grad_b
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x  # (batch, fan_in), kept for backward
        out = x @ self.w  # (batch, fan_out)
        out += self.b  # in place on our own fresh array
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Write dL/dw and dL/db into the gradient buffers; return dL/dx (skipped for the first layer)."""
        np.matmul(self.x.T, dout, out=self.grad_w)  # (fan_in, fan_out)
        np.sum(dout, axis=0, out=self.grad_b)
        return dout @ self.w.T if need_dx else None  # (batch, fan_in)


class ReLU:
    """max(0, x); the gradient flows only where the input was positive."""

    def __init__(self) -> None:
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.out = np.maximum(x, 0)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        # A fresh result array: the caller's `dout` stays as it was.
        return np.multiply(dout, self.out > 0, dtype=dout.dtype)


class Dropout:
    """Inverted dropout: scale kept units by 1/(1-p) during training so inference needs no change."""

    def __init__(self, p: float, rng: np.random.Generator):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.rng = p, rng
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if not train or self.p == 0.0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self.mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self.mask is None else dout * self.mask


class SoftmaxCrossEntropy:
    """Softmax and cross-entropy fused: the gradient is simply (probabilities - one_hot) / batch."""

    def __init__(self) -> None:
        self.probs: np.ndarray | None = None
        self.labels: np.ndarray | None = None

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """Mean cross-entropy of integer `labels` (batch,) under `logits` (batch, classes)."""
        self.probs = softmax(logits)
        self.labels = labels
        picked = self.probs[np.arange(len(labels)), labels]
        return float(-np.mean(np.log(np.maximum(picked, np.finfo(picked.dtype).tiny))))

    def backward(self) -> np.ndarray:
        grad = self.probs.copy()  # (batch, classes)
        grad[np.arange(len(self.labels)), self.labels] -= 1
        grad /= len(self.labels)
        return grad


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits cannot overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted
