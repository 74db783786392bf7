"""The training batches of a run, one per step: which images, augmented, as network input.

Two ways to make them. Without the new augmentations (`AugmentSpec.beyond_shift` false) the
batches come from the run's own generator, interleaved with dropout's draws, exactly as before
they existed, so earlier versions' configurations still give the same weights.

With them, the batch of step k depends only on the seed and k: its images come from the epoch's
permutation (generator `(seed, 2, epoch)`) and its augmentation from generator `(seed, 1, k)`.
So any process may make any batch and the run is the same: trainer/batches_ahead.py has a helper
process make the next few while the network trains on the current one, and `make_batches` there
picks the stream a run uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from mlp import INPUT_SCALE
from trainer.augment import Augmenter, AugmentSpec
from trainer.augment_geometry import ink_outline, random_shift
from trainer.noise import add_noise

Batch = tuple[np.ndarray, np.ndarray]  # float32 (batch, 784) in [0, 1], int64 labels (batch,)


class BatchPlan:
    """Which training images each step uses: shuffled epochs, or draws with replacement."""

    def __init__(self, count: int, batch_size: int, epochs: bool) -> None:
        self.count, self.batch_size, self.epochs = count, batch_size, epochs
        self.per_epoch = max(1, count // batch_size)
        self._order = np.empty(0, dtype=np.int64)

    def indices(self, step: int, rng: np.random.Generator) -> np.ndarray:
        """The image indices of `step` from a generator shared with the run; call with consecutive
        steps (a new epoch reshuffles)."""
        if not self.epochs:
            return rng.integers(0, self.count, size=self.batch_size)  # with replacement
        position = step % self.per_epoch
        if position == 0:
            self._order = rng.permutation(self.count)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]


class Batches(Protocol):
    """The batch of each step, in order; `close` stops any helper process."""

    def __next__(self) -> Batch: ...

    def close(self) -> None: ...


class SharedRngBatches:
    """Whole-pixel shifts and noise drawn from the run's generator, as the trainer always did."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        plan: BatchPlan,
        shift: int,
        noise: float,
        rng: np.random.Generator,
    ) -> None:
        self.x, self.y, self.plan, self.shift, self.noise, self.rng = x, y, plan, shift, noise, rng
        self.step = 0

    def __next__(self) -> Batch:
        batch = self.plan.indices(self.step, self.rng)
        self.step += 1
        xb = random_shift(self.x[batch], self.shift, self.rng).astype(np.float32)  # (batch, 784)
        xb *= np.float32(INPUT_SCALE)
        if self.noise:
            xb = add_noise(xb, self.noise, self.rng)
        return xb, self.y[batch]

    def close(self) -> None:
        pass


class BatchMaker:
    """Makes the augmented batch of any step, from the seed and the step number alone.

    Thread-safe as long as each thread passes its own `Augmenter` (it holds work arrays); a helper
    process (trainer/batches_ahead.py) builds its own from the same images, plan, spec and seed.
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, plan: BatchPlan, spec: AugmentSpec, noise: float, seed: int
    ) -> None:
        self.x, self.y, self.plan, self.spec, self.noise, self.seed = x, y, plan, spec, noise, seed
        self.outlines = ink_outline(x) if spec.geometric else None  # once, not per batch
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, step: int, augmenter: Augmenter) -> Batch:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, step)))
        batch = self._indices(step, rng)
        xb = augmenter(self.x[batch], rng, None if self.outlines is None else self.outlines[batch])
        if self.noise:
            xb = add_noise(xb, self.noise, rng)
        return xb, self.y[batch]

    def _indices(self, step: int, rng: np.random.Generator) -> np.ndarray:
        plan = self.plan
        if not plan.epochs:
            return rng.integers(0, plan.count, size=plan.batch_size)  # with replacement
        epoch, position = divmod(step, plan.per_epoch)
        with self._lock:
            order = self._orders.get(epoch)
            if order is None:
                seed = np.random.SeedSequence(self.seed, spawn_key=(2, epoch))
                order = self._orders[epoch] = np.random.default_rng(seed).permutation(plan.count)
                self._orders.pop(epoch - 2, None)  # the helper is at most an epoch ahead
        return order[position * plan.batch_size : (position + 1) * plan.batch_size]


class InlineBatches:
    """Every batch made by the training thread when it asks for it."""

    def __init__(self, make: Callable[[int, Augmenter], Batch], spec: AugmentSpec, steps: int) -> None:
        self.make, self.steps, self.step = make, steps, 0
        self.augmenter = Augmenter(spec)

    def __next__(self) -> Batch:
        if self.step >= self.steps:
            raise StopIteration
        self.step += 1
        return self.make(self.step - 1, self.augmenter)

    def close(self) -> None:
        pass
