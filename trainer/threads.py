"""How many BLAS threads a training run uses.

On two cores, a small network's matrix products are too short to pay for waking a second
thread, while a wide one's are long enough to profit. `bench/train_throughput.py` measures both;
the threshold below comes from those figures.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import AbstractContextManager

from threadpoolctl import threadpool_limits

# Below this many multiply-adds per sample, one thread is faster per step (see bench/README.md).
TWO_THREADS_FROM_MACS = 200_000


def preferred_threads(sizes: Sequence[int]) -> int:
    macs = sum(a * b for a, b in itertools.pairwise(sizes))
    return 2 if macs >= TWO_THREADS_FROM_MACS else 1


def blas_threads(sizes: Sequence[int], threads: int | None = None) -> AbstractContextManager:
    """Context manager limiting BLAS to `threads`, or to the faster count for this network size."""
    return threadpool_limits(limits=threads or preferred_threads(sizes), user_api="blas")
