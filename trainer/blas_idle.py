"""Let OpenBLAS's idle threads sleep at once rather than spin: must run before NumPy is imported.

OpenBLAS keeps its worker threads spinning for about 2^28 cycles (a tenth of a second) after each
matrix product, so between products (the activations, dropout, the optimiser's step, all on one
thread) a two-thread training run keeps the second core busy doing nothing. A helper process
making augmented batches ahead (trainer/batches_ahead.py) then finds no core free: at nice 19 it
made 0.02-0.11 batches per step beside two spinning BLAS threads, 0.5-1.4 once they slept at
once (scratch measurements, bench/README.md). Waking a sleeping thread costs a few
microseconds per product, which the steps did not show.

OpenBLAS reads the setting when it loads, so entry points (`python -m trainer`, `python -m service`,
whose training jobs inherit it, the benchmarks) call `let_idle_blas_threads_sleep` before anything
imports NumPy; an operator's own `OPENBLAS_THREAD_TIMEOUT` wins.
"""

from __future__ import annotations

import os

# log2 of the cycles an idle OpenBLAS thread spins before it sleeps; 4 is OpenBLAS's minimum
SPIN_LOG2_CYCLES = "4"


def let_idle_blas_threads_sleep() -> None:
    """Ask OpenBLAS (when it loads later in this process or in its children) not to spin idle."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", SPIN_LOG2_CYCLES)
