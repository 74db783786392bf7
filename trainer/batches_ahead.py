"""Augmented batches made ahead by a helper process at the lowest priority, and the stream a run uses.

The batch of step k depends only on the seed and k (trainer/batches.py), so a helper process makes
the next ones (up to `AHEAD`: its bank) into shared memory while the network trains on the current
one, and the training thread makes any batch the helper has not finished itself: it never waits for
the helper, and the run is the same either way. The helper runs at the lowest priority (nice 19),
so it only ever uses CPU time nothing else wants. A run on two BLAS threads takes turns with it
(trainer/threads.py): it spends the bank on two threads, and trains on one while the helper
refills it, since squeezed into the gaps of a two-thread step (OpenBLAS's idle threads sleep
there rather than spin: trainer/blas_idle.py) the helper made too few batches.

Why a process and not a thread: a helper thread holds the GIL for the Python between its NumPy
calls, and the training thread waits for it; beside two BLAS threads the thread helper cost
`baseline` +31-40 % per epoch where the same work in a nice-19 process cost +11-19 % per step
while making 1.2-1.4 batches per step (bench/README.md, "Augmentation"). The training images go to
the helper once, through shared memory; each batch comes back through a slot of shared memory.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Iterator
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from trainer.augment import Augmenter, AugmentSpec
from trainer.augment_geometry import PIXELS
from trainer.batches import Batch, Batches, BatchMaker, BatchPlan, InlineBatches, SharedRngBatches

log = logging.getLogger(__name__)

# Batches the helper makes ahead of the training step: its bank, which a run on two BLAS threads
# spends while the helper rests and refills on one (trainer/threads.py, `ThreadTuner`). 12 banked
# batches of 128 digits take 4.8 MB of shared memory.
AHEAD = 12
# The helper's scheduling priority (nice): the lowest, so it never delays the training's threads.
HELPER_NICE = 19
# Room left in /dev/shm beside the helper's blocks, for everything else that uses it.
SHM_MARGIN = 8 << 20


class AheadBatches:
    """Batches made up to `ahead` steps early by a helper process; the training thread makes any
    batch the helper has not finished itself (the same batch), so it never waits for it."""

    def __init__(self, make: BatchMaker, steps: int, ahead: int = AHEAD) -> None:
        self.make, self.steps, self.ahead = make, steps, ahead
        self.augmenter = Augmenter(make.spec)
        self.step = 0  # the next step the training thread asks for
        self.made_ahead = 0  # batches the helper had ready in time
        self.helper_ready = False  # set up and making batches (it takes a second to start)
        self._helping = True
        self._alive = True
        size = make.plan.batch_size
        self._memory = [
            _shared(make.x),
            _shared(make.y.astype(np.int64)),
            shared_memory.SharedMemory(create=True, size=ahead * size * (PIXELS * 4 + 8) + 8),
        ]
        self._xs, self._ys, self._progress = _slots(self._memory[2], ahead, size)
        self._free = list(range(ahead))
        self._ready: dict[int, tuple[int, int]] = {}  # step -> (slot, rows)
        self._asked = 0  # every step below this was asked of the helper or is past
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or locks
        self._conn, theirs = context.Pipe()
        images = (self._memory[0].name, make.x.shape, make.x.dtype.str)
        labels = (self._memory[1].name, make.y.shape)
        settings = (make.plan, make.spec, make.noise, make.seed, self._memory[2].name, ahead, size)
        self._process = context.Process(
            target=_help, args=(theirs, images, labels, settings), name="batches-ahead", daemon=True
        )
        with _children_allowed():
            self._process.start()
        theirs.close()

    def __next__(self) -> Batch:
        if self.step >= self.steps:
            raise StopIteration
        step = self.step
        self._collect()
        ready = self._ready.pop(step, None)
        self.step += 1
        self._progress[0] = self.step  # the helper skips what is asked of it below this
        for stale in [s for s in self._ready if s < step]:  # overtaken: made here meanwhile
            self._free.append(self._ready.pop(stale)[0])
        batch = None
        if ready is not None:
            slot, rows = ready
            batch = (self._xs[slot, :rows].copy(), self._ys[slot, :rows].copy())
            self._free.append(slot)
            self.made_ahead += 1
        self._ask()
        return batch if batch is not None else self.make(step, self.augmenter)

    def banked(self) -> float:
        """How full the bank is: the share of the next `ahead` steps whose batches are ready."""
        self._collect()
        return sum(step >= self.step for step in self._ready) / self.ahead

    def set_helper(self, on: bool) -> None:
        """Let the helper make batches ahead, or pause it (it finishes what it was asked)."""
        self._helping = on
        if on:
            self._ask()

    def close(self) -> None:
        """Stop the helper process and free the shared memory."""
        if self._alive:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(None)
        self._alive = False
        self._process.join(5)
        if self._process.is_alive():  # pragma: no cover - a helper stuck in a computation
            self._process.kill()
            self._process.join()
        self._conn.close()
        for memory in self._memory:
            memory.close()
            with contextlib.suppress(FileNotFoundError):
                memory.unlink()

    @property
    def helper_alive(self) -> bool:
        return self._alive and self._process.is_alive()

    def _collect(self) -> None:
        """Take in whatever the helper has finished, without waiting."""
        try:
            while self._alive and self._conn.poll():
                kind, step, slot, rows = self._conn.recv()
                if kind == "ready":
                    self.helper_ready = True
                elif kind == "made" and step >= self.step:
                    self._ready[step] = (slot, rows)
                else:  # overtaken, or the helper could not make it (the training thread will, and
                    self._free.append(slot)  # meet the same error)
        except (EOFError, OSError):
            self._lost()

    def _ask(self) -> None:
        """Ask the helper for the next steps within reach, one per free slot."""
        self._asked = max(self._asked, self.step)
        last = min(self.step + self.ahead, self.steps)
        try:
            while self._helping and self._alive and self._free and self._asked < last:
                self._conn.send((self._asked, self._free.pop()))
                self._asked += 1
        except (OSError, ValueError):
            self._lost()

    def _lost(self) -> None:
        if self._alive:
            log.warning("the batch helper process is gone; the training thread makes every batch")
        self._alive = False


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process (a service's training job is one) start the helper.

    multiprocessing refuses children to daemonic processes because those end without cleaning up;
    the helper needs none: it ends by itself once its pipe to the training process closes.
    """
    me = multiprocessing.current_process()
    daemonic = me.daemon
    me.daemon = False
    try:
        yield
    finally:
        me.daemon = daemonic


def _slots(block: shared_memory.SharedMemory, ahead: int, size: int) -> tuple[np.ndarray, ...]:
    """The batch slots' images and labels, and the training's next step, in one shared block."""
    xs = np.ndarray((ahead, size, PIXELS), np.float32, buffer=block.buf)
    ys = np.ndarray((ahead, size), np.int64, buffer=block.buf, offset=xs.nbytes)
    progress = np.ndarray((1,), np.int64, buffer=block.buf, offset=xs.nbytes + ys.nbytes)
    return xs, ys, progress


def _shared(array: np.ndarray) -> shared_memory.SharedMemory:
    """A shared copy of `array` (at least one byte: an empty block cannot be made)."""
    memory = shared_memory.SharedMemory(create=True, size=max(array.nbytes, 1))
    np.ndarray(array.shape, array.dtype, buffer=memory.buf)[...] = array
    return memory


def _help(
    conn: Connection, images: tuple[Any, ...], labels: tuple[Any, ...], settings: tuple[Any, ...]
) -> None:
    """The helper process: make each batch asked for into its slot, until told to stop or orphaned."""
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    cv2.setNumThreads(1)
    plan, spec, noise, seed, slots_name, ahead, size = settings
    blocks = [shared_memory.SharedMemory(name=name) for name in (images[0], labels[0], slots_name)]
    arrays: list[np.ndarray] = []
    try:
        x = np.ndarray(images[1], np.dtype(images[2]), buffer=blocks[0].buf)
        y = np.ndarray(labels[1], np.int64, buffer=blocks[1].buf)
        xs, ys, progress = _slots(blocks[2], ahead, size)
        arrays = [x, y, xs, ys, progress]
        make = BatchMaker(x, y, plan, spec, noise, seed)
        augmenter = Augmenter(spec)
        # Set up at normal priority (a second at most: imports, the images' ink outlines): at the
        # lowest, beside a two-thread training run, it took long enough to miss the run's first choices.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, 0, HELPER_NICE)
        conn.send(("ready", -1, -1, 0))
        while (request := conn.recv()) is not None:
            step, slot = request
            if step < progress[0]:  # the training thread has made it meanwhile
                conn.send(("skipped", step, slot, 0))
                continue
            try:
                xb, yb = make(step, augmenter)
            except Exception:  # the training thread meets the same error when it makes this batch
                log.exception("making batch %d ahead failed", step)
                conn.send(("failed", step, slot, 0))
                continue
            xs[slot, : len(yb)] = xb
            ys[slot, : len(yb)] = yb
            conn.send(("made", step, slot, len(yb)))
    except (EOFError, OSError, KeyboardInterrupt):  # the training process ended or went away
        pass
    finally:
        del arrays, make  # the views go before their blocks close
        for block in blocks:
            block.close()


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
    """The batch stream a run with this augmentation uses (see trainer/batches.py)."""
    if not spec.beyond_shift:
        return SharedRngBatches(x, y, plan, spec.shift, noise, rng)
    make = BatchMaker(x, y, plan, spec, noise, seed)
    if ahead and _room_in_shared_memory(x.nbytes + y.size * 8 + AHEAD * plan.batch_size * (PIXELS * 4 + 8)):
        try:
            return AheadBatches(make, steps)
        except OSError as exc:  # out of processes or shared memory: train without the helper
            log.warning("no batch helper process (%s); the training thread makes every batch", exc)
    return InlineBatches(make, spec, steps)


def _room_in_shared_memory(needed: int) -> bool:
    """Whether /dev/shm has room for `needed` bytes and a margin: writing past a full one is a
    SIGBUS, not an error (a container's /dev/shm is 64 MiB by default, MNIST's images 47 MB)."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:  # not Linux: shared memory comes from elsewhere
        return True
    free = stats.f_bavail * stats.f_frsize
    if free >= needed + SHM_MARGIN:
        return True
    log.warning(
        "/dev/shm has %d MiB free, the batch helper needs %d MiB: the training thread makes every batch",
        free >> 20, (needed + SHM_MARGIN) >> 20,
    )  # fmt: skip
    return False
