"""Let OpenBLAS's idle threads sleep at once rather than spin: must run before NumPy is imported.

OpenBLAS keeps its worker threads spinning for about 2^28 cycles (a tenth of a second) after each
matrix product, so between products (the activations, dropout, the optimiser's step, all on one
thread) a two-thread training run keeps the second core busy doing nothing. A helper process
making augmented batches ahead (trainer/batches_ahead.py) then finds no core free: at nice 19 it
made 0.02-0.11 batches per step beside two spinning BLAS threads, 0.5-1.4 once they slept at
once (scratch measurements, bench/README.md). Waking a sleeping thread costs a few
microseconds per product, which the steps did not show.

OpenBLAS reads the setting when it loads, so the trainer's entry point and the benchmarks call
`let_idle_blas_threads_sleep` before anything imports NumPy, and the service starts its training
jobs' processes `for_training_children` (a cluster worker passes it in its jobs' environment). Not
the serving processes themselves: at one BLAS thread they answered 3-7 % fewer requests with it
(`bench/serve_load.py --variant spin=OPENBLAS_THREAD_TIMEOUT=28`). An operator's own
`OPENBLAS_THREAD_TIMEOUT` wins everywhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# log2 of the cycles an idle OpenBLAS thread spins before it sleeps; 4 is OpenBLAS's minimum
SPIN_LOG2_CYCLES = "4"
VARIABLE = "OPENBLAS_THREAD_TIMEOUT"


def let_idle_blas_threads_sleep() -> None:
    """Ask OpenBLAS (when it loads later in this process or in its children) not to spin idle."""
    os.environ.setdefault(VARIABLE, SPIN_LOG2_CYCLES)


@contextlib.contextmanager
def for_training_children() -> Iterator[None]:
    """Processes started inside inherit the setting; this process's environment is as it was after."""
    before = os.environ.get(VARIABLE)
    let_idle_blas_threads_sleep()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VARIABLE, None)
