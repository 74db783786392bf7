"""The training batches of a run, one per step: which images, augmented, as network input.

Two ways to make them. Without the new augmentations (`AugmentSpec.beyond_shift` false) the
batches come from the run's own generator, interleaved with dropout's draws, exactly as before
they existed, so earlier versions' configurations still give the same weights. With them, the
batches come from a generator of their own (the seed's child stream 1) and can be prepared ahead
by a background thread while the network trains on the previous ones: NumPy and BLAS release the
GIL in their loops, so augmenting a batch overlaps with the matrix products of a training step.
A batch depends only on the seed and its step number, never on timing, so a run is the same with
or without the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from mlp import INPUT_SCALE
from trainer.augment import Augmenter, AugmentSpec, random_shift
from trainer.noise import add_noise

Batch = tuple[np.ndarray, np.ndarray]  # float32 (batch, 784) in [0, 1], int64 labels (batch,)
# Batches prepared ahead of the training step: two keep the thread busy through a slow step, more
# only hold memory.
PREFETCH = 2
_DONE = object()


class BatchPlan:
    """Which training images each step uses: shuffled epochs, or draws with replacement."""

    def __init__(self, count: int, batch_size: int, epochs: bool) -> None:
        self.count, self.batch_size, self.epochs = count, batch_size, epochs
        self.per_epoch = max(1, count // batch_size)
        self._order = np.empty(0, dtype=np.int64)

    def indices(self, step: int, rng: np.random.Generator) -> np.ndarray:
        """The image indices of `step`; call with consecutive steps (a new epoch reshuffles)."""
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


def augmented_batches(
    x: np.ndarray,
    y: np.ndarray,
    plan: BatchPlan,
    spec: AugmentSpec,
    noise: float,
    seed: int,
    steps: int,
) -> Iterator[Batch]:
    """The batches of `steps` steps, augmented, from the seed's child stream 1; made in this thread."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    augmenter = Augmenter(spec)
    for step in range(steps):
        batch = plan.indices(step, rng)
        xb = augmenter(x[batch], rng)
        if noise:
            xb = add_noise(xb, noise, rng)
        yield xb, y[batch]


class InlineBatches:
    """`augmented_batches`, made when asked for."""

    def __init__(self, batches: Iterator[Batch]) -> None:
        self._batches = batches

    def __next__(self) -> Batch:
        return next(self._batches)

    def close(self) -> None:
        pass


class PrefetchedBatches:
    """`augmented_batches`, made up to `depth` steps ahead by a background thread."""

    def __init__(self, batches: Iterator[Batch], depth: int = PREFETCH) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batches,), name="batch-prefetch", daemon=True)
        self._thread.start()

    def _run(self, batches: Iterator[Batch]) -> None:
        try:
            for batch in batches:
                if not self._put(batch):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the training thread, which raises it
            self._put(exc)

    def _put(self, item: object) -> bool:
        """Queue `item` unless the consumer closed the stream meanwhile; False if it did."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> Batch:
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
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
    prefetch: bool = True,
) -> Batches:
    """The batch stream a run with this augmentation uses (see the module's docstring)."""
    if not spec.beyond_shift:
        return SharedRngBatches(x, y, plan, spec.shift, noise, rng)
    batches = augmented_batches(x, y, plan, spec, noise, seed, steps)
    return PrefetchedBatches(batches) if prefetch else InlineBatches(batches)
