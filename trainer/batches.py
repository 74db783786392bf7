"""The training batches of a run, one per step: which images, augmented, as network input.

Two ways to make them. Without the new augmentations (`AugmentSpec.beyond_shift` false) the
batches come from the run's own generator, interleaved with dropout's draws, exactly as before
they existed, so earlier versions' configurations still give the same weights.

With them, the batch of step k depends only on the seed and k: its images come from the epoch's
permutation (generator `(seed, 2, epoch)`) and its augmentation from generator `(seed, 1, k)`.
So any thread may make any batch and the run is the same. A helper thread makes the next few at
the lowest CPU priority, while the network trains on the current one, and the training thread
makes a batch itself whenever the helper has not finished it: the helper only ever uses CPU
time nothing else wants. That matters on two cores: a helper at normal priority beside two BLAS
threads made every matrix product wait for a descheduled BLAS thread (steps up to 10 times
slower), and on a busy machine a helper that the training waited for made it crawl.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from mlp import INPUT_SCALE
from trainer.augment import Augmenter, AugmentSpec
from trainer.augment_geometry import ink_outline, random_shift
from trainer.noise import add_noise

log = logging.getLogger(__name__)

Batch = tuple[np.ndarray, np.ndarray]  # float32 (batch, 784) in [0, 1], int64 labels (batch,)
# Batches the helper thread makes ahead of the training step.
AHEAD = 3
# The helper's scheduling priority (nice): the lowest, so it never delays the training's threads.
HELPER_NICE = 19


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
    """The batch of each step, in order; `close` stops any helper thread."""

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

    Thread-safe as long as each thread passes its own `Augmenter` (it holds work arrays).
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


class AheadBatches:
    """Batches made up to `ahead` steps early by a helper thread at the lowest priority; the
    training thread makes any batch the helper has not finished itself (the same batch: it
    depends only on the step), so it never waits for the helper."""

    def __init__(
        self, make: Callable[[int, Augmenter], Batch], spec: AugmentSpec, steps: int, ahead: int = AHEAD
    ) -> None:
        self.make, self.steps, self.ahead = make, steps, ahead
        self.augmenter = Augmenter(spec)
        self.step = 0  # the next step the training thread asks for
        self.made_ahead = 0  # batches the helper had ready in time
        self._ready: dict[int, Batch] = {}
        self._claimed = -1  # the last step the helper took on
        self._stopped = False
        self._helping = True
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._help, args=(Augmenter(spec),), name="batches-ahead", daemon=True
        )
        self._thread.start()

    def __next__(self) -> Batch:
        if self.step >= self.steps:
            raise StopIteration
        step = self.step
        with self._changed:
            batch = self._ready.pop(step, None)
            self.step += 1
            self._changed.notify_all()  # room for one more
        if batch is not None:
            self.made_ahead += 1
            return batch
        return self.make(step, self.augmenter)

    def _help(self, augmenter: Augmenter) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HELPER_NICE)
        while True:
            with self._changed:
                while not self._stopped and not self._work_left():
                    self._changed.wait()
                if self._stopped:
                    return
                step = self._claimed = max(self._claimed + 1, self.step + 1)
            try:
                batch = self.make(step, augmenter)
            except Exception:  # the training thread meets the same error when it makes this batch
                log.exception("making batch %d ahead failed; the training thread makes the rest", step)
                return
            with self._changed:
                if step >= self.step:  # not overtaken meanwhile
                    self._ready[step] = batch

    def _work_left(self) -> bool:
        """Whether a step within reach of the helper is neither made nor taken on (lock held)."""
        if not self._helping:
            return False
        return max(self._claimed + 1, self.step + 1) <= min(self.step + self.ahead, self.steps - 1)

    def set_helper(self, on: bool) -> None:
        """Let the helper make batches ahead, or pause it (it finishes the one in hand)."""
        with self._changed:
            self._helping = on
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._stopped = True
            self._ready.clear()
            self._changed.notify_all()
        self._thread.join()


def make_batches(
    x: np.ndarray,
    y: np.ndarray,
    plan: BatchPlan,
    spec: AugmentSpec,
    noise: float,
    seed: int,
    steps: int,
    rng: np.random.Generator,
    ahead: bool = True,
) -> Batches:
    """The batch stream a run with this augmentation uses (see the module's docstring)."""
    if not spec.beyond_shift:
        return SharedRngBatches(x, y, plan, spec.shift, noise, rng)
    make = BatchMaker(x, y, plan, spec, noise, seed)
    return AheadBatches(make, spec, steps) if ahead else InlineBatches(make, spec, steps)
