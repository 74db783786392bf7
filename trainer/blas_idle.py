"""Let OpenBLAS's idle threads sleep at once rather than spin, in runs with a batch helper process.

OpenBLAS keeps its worker threads spinning for about 2^28 cycles (a tenth of a second) after each
matrix product, so between products (the activations, dropout, the optimiser's step, all on one
thread) a two-thread training run keeps the second core busy doing nothing. A helper process
making augmented batches ahead (trainer/batches_ahead.py) then finds no core free: at nice 19 it
made 0.02-0.11 batches per step beside two spinning BLAS threads, 0.5-1.4 once they slept at
once (scratch measurements, bench/README.md).

Only runs with that helper want it: without one, the spinning threads answer the next product
sooner (`bench/train_throughput.py --no-torch`: the research script's 784-100-10 took 0.430 ms
per two-thread step with sleeping threads, 0.362 spinning; 784-512-512-10 4.22 against 4.08). Nor
the serving processes: at one BLAS thread they answered 3-7 % fewer requests with it
(`bench/serve_load.py --variant spin=OPENBLAS_THREAD_TIMEOUT=28`).

OpenBLAS reads the setting when NumPy loads it, before a command's run is known: so `python -m
trainer` and a cluster worker's job process run themselves again with it once they know their run
makes augmented batches (`restart_for`); the service starts an augmented job's process
`for_training_children`. An operator's own `OPENBLAS_THREAD_TIMEOUT` wins everywhere.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.config import TrainConfig

# log2 of the cycles an idle OpenBLAS thread spins before it sleeps; 4 is OpenBLAS's minimum
SPIN_LOG2_CYCLES = "4"
VARIABLE = "OPENBLAS_THREAD_TIMEOUT"


def wanted_for(config: TrainConfig) -> bool:
    """Whether a run of `config` makes its batches in a helper process (augmentation beyond shifts)."""
    from trainer.augment import AugmentSpec  # NumPy: only once the caller has loaded it

    return AugmentSpec.from_config(config).beyond_shift


def let_idle_blas_threads_sleep() -> None:
    """Ask OpenBLAS (when it loads later in this process or in its children) not to spin idle."""
    os.environ.setdefault(VARIABLE, SPIN_LOG2_CYCLES)


def restart_for(config: TrainConfig) -> None:
    """Run this process's command again, as the same process, with idle threads sleeping, if a run
    of `config` wants them to and nobody has set OpenBLAS's variable (this process's OpenBLAS was
    loaded without it). Returns only when there is nothing to do. For entry points only."""
    if VARIABLE in os.environ or not wanted_for(config):
        return
    let_idle_blas_threads_sleep()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


@contextlib.contextmanager
def for_training_children(wanted: bool = True) -> Iterator[None]:
    """Processes started inside inherit the setting if `wanted`; this process's environment is as
    it was after."""
    before = os.environ.get(VARIABLE)
    if wanted:
        let_idle_blas_threads_sleep()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VARIABLE, None)
