"""OpenBLAS must be told not to spin before NumPy loads it: the entry points do so first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainer.blas_idle import SPIN_LOG2_CYCLES, for_training_children, let_idle_blas_threads_sleep

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(*args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in the checkout, without an OPENBLAS_THREAD_TIMEOUT of its own."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_trainer_asks_before_numpy_loads():
    lines = run_fresh("-X", "importtime", "-m", "trainer", "--help").stderr.splitlines()
    order = [line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")]
    assert "numpy" in order
    assert order.index("trainer.blas_idle") < order.index("numpy")


def test_a_services_training_processes_inherit_it_and_the_service_keeps_its_own(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    with for_training_children():
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert child.stdout.strip() == SPIN_LOG2_CYCLES
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ  # the serving process's own is untouched
    run = run_fresh("-c", "import os, service.__main__; print(os.getenv('OPENBLAS_THREAD_TIMEOUT'))")
    assert run.stdout.strip() == "None", run.stderr  # serving spins as before: it answered faster so


def test_an_operators_own_setting_wins(monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "20")
    let_idle_blas_threads_sleep()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "20"
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    let_idle_blas_threads_sleep()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == SPIN_LOG2_CYCLES
