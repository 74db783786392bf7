"""`python -m trainer`: see trainer.cli."""

import sys

from trainer.blas_idle import let_idle_blas_threads_sleep

let_idle_blas_threads_sleep()  # before trainer.cli imports NumPy

from trainer.cli import main  # noqa: E402

sys.exit(main())
