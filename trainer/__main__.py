"""`python -m trainer`: see trainer.cli."""

import sys

from trainer.blas_idle import restart_for
from trainer.cli import main

sys.exit(main(before_run=restart_for))
