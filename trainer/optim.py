"""Optimisers and learning-rate schedules over the network's flat parameter buffer.

Each optimiser's `step(params, grads, lr)` updates the flat float32 `params` in place from the
flat `grads`, which it never modifies. Working on one flat buffer means the whole update is a few
vectorised passes with preallocated scratch space, instead of one small update per array: that is
where a NumPy network wins back time from a framework's per-tensor loop.

Adam's dozen passes run chunk by chunk (`CHUNK` elements): the five arrays in flight then stay in
the L2 cache between passes instead of streaming the whole parameter vector from memory a dozen
times. Each element sees the same operations in the same order, so the result is bit for bit the
one of whole-vector passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

CHUNK = 32_768  # elements per pass: 5 arrays x 128 KiB stay in a 512 KiB-1 MiB L2 cache


class Optimizer:
    """Base: weight decay on the weight matrices only (biases are left alone)."""

    def __init__(self, size: int, weight_decay: float = 0.0, decay_slices: Sequence[slice] = ()):
        self.weight_decay = weight_decay
        self.decay_slices = list(decay_slices)
        self.scratch = np.empty(size, dtype=np.float32)
        self.decayed = np.empty(size, dtype=np.float32) if weight_decay else None

    def effective_grads(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """`grads + weight_decay * params` (L2) without touching `grads`, or `grads` itself."""
        if self.decayed is None:
            return grads
        g = self.decayed
        np.copyto(g, grads)
        for s in self.decay_slices:
            g[s] += self.weight_decay * params[s]
        return g

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Plain stochastic gradient descent: p -= lr * g."""

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        g = self.effective_grads(params, grads)
        np.multiply(g, np.float32(lr), out=self.scratch)
        params -= self.scratch


class Momentum(Optimizer):
    """Heavy-ball momentum as PyTorch defines it: buf = mu * buf + g; p -= lr * buf (or Nesterov)."""

    def __init__(self, size: int, momentum: float = 0.9, nesterov: bool = False, **kwargs):
        super().__init__(size, **kwargs)
        self.momentum, self.nesterov = np.float32(momentum), nesterov
        self.buf = np.zeros(size, dtype=np.float32)

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        g = self.effective_grads(params, grads)
        self.buf *= self.momentum
        self.buf += g
        if self.nesterov:  # look ahead: g + mu * buf
            np.multiply(self.buf, self.momentum, out=self.scratch)
            self.scratch += g
        else:
            np.copyto(self.scratch, self.buf)
        self.scratch *= np.float32(lr)
        params -= self.scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba), with the bias corrections folded into the step size as in the paper."""

    def __init__(self, size: int, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **kwargs):
        super().__init__(size, **kwargs)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = np.zeros(size, dtype=np.float32)
        self.v = np.zeros(size, dtype=np.float32)
        self.t = 0
        self._tmp = np.empty(min(size, CHUNK), dtype=np.float32)  # stays in cache from pass to pass

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        if params.shape != self.m.shape or grads.shape != self.m.shape:  # slicing would not notice
            raise ValueError(
                f"expected params and grads of shape {self.m.shape}, got {params.shape}, {grads.shape}"
            )
        g = self.effective_grads(params, grads)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # p -= lr_t * m / (sqrt(v) + eps_t), with lr_t and eps_t carrying the bias corrections
        correction2 = math.sqrt(1 - b2**self.t)
        step_size = np.float32(lr * correction2 / (1 - b1**self.t))
        eps = np.float32(self.eps * correction2)
        one_minus_b1, one_minus_b2 = np.float32(1 - b1), np.float32(1 - b2)
        for start in range(0, len(self.m), CHUNK):
            chunk = slice(start, start + CHUNK)
            p, grad, m, v = params[chunk], g[chunk], self.m[chunk], self.v[chunk]
            tmp = self._tmp[: len(p)]
            # m = b1 * m + (1 - b1) * g, written as m += (1 - b1) * (g - m): no second temporary
            np.subtract(grad, m, out=tmp)
            tmp *= one_minus_b1
            m += tmp
            # v = b2 * v + (1 - b2) * g^2
            np.multiply(grad, grad, out=tmp)
            tmp -= v
            tmp *= one_minus_b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


def make_optimizer(
    name: str,
    size: int,
    *,
    weight_decay: float = 0.0,
    decay_slices: Sequence[slice] = (),
    momentum: float = 0.9,
) -> Optimizer:
    """Build an optimiser by its CLI name."""
    if name == "sgd":
        return SGD(size, weight_decay=weight_decay, decay_slices=decay_slices)
    if name in ("momentum", "nesterov"):
        return Momentum(
            size,
            momentum=momentum,
            nesterov=name == "nesterov",
            weight_decay=weight_decay,
            decay_slices=decay_slices,
        )
    if name == "adam":
        return Adam(size, weight_decay=weight_decay, decay_slices=decay_slices)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class Schedule:
    """Learning rate as a function of the step: constant, cosine to `final_fraction`, or step decay.

    A short linear warm-up (`warmup_steps`) keeps Adam's first steps from overshooting.
    """

    kind: str
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    final_fraction: float = 0.0
    step_every: int = 1
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** (step // max(1, self.step_every))
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.base_lr * self.final_fraction
        return floor + (self.base_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class WeightAverage:
    """An exponential moving average of the weights (Polyak averaging), kept beside training.

    The average of the last few thousand steps' weights generalises better than the last step's
    alone, which carries the noise of its last batches. It is updated every `every` steps with the
    decay raised to that power (a quarter of the memory traffic), and warmed up: the effective decay
    is (1 + t) / (10 + t) until that exceeds `decay`, so early weights, far from the end, fade fast.
    """

    def __init__(self, params: np.ndarray, decay: float, every: int = 4):
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.every = decay, every
        self.average = params.copy()

    def update(self, step: int, params: np.ndarray) -> None:
        """After the optimiser's step `step` (0-based): fold the new weights in, every `every` steps."""
        if (step + 1) % self.every:
            return
        done = step + 1
        keep = min(self.decay, (1 + done) / (10 + done)) ** self.every
        self.average *= keep
        self.average += (1 - keep) * params

    @contextmanager
    def swapped_into(self, params: np.ndarray) -> Iterator[None]:
        """The average in `params` for the duration (to evaluate it), the training weights after."""
        kept = params.copy()
        params[...] = self.average
        try:
            yield
        finally:
            params[...] = kept
