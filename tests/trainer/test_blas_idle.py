"""OpenBLAS must be told not to spin before NumPy loads it: the entry points do so first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainer.blas_idle import SPIN_LOG2_CYCLES, let_idle_blas_threads_sleep

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


def test_the_service_asks_before_numpy_loads_so_its_training_jobs_inherit_it():
    run = run_fresh(
        "-c",
        "import os, sys, service.__main__;print('numpy' in sys.modules,os.getenv('OPENBLAS_THREAD_TIMEOUT'))",
    )
    assert run.stdout.split() == ["False", SPIN_LOG2_CYCLES], run.stderr


def test_an_operators_own_setting_wins(monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "20")
    let_idle_blas_threads_sleep()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "20"
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    let_idle_blas_threads_sleep()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == SPIN_LOG2_CYCLES
