"""OpenBLAS's idle threads sleep in runs with a batch helper, and only there: it is read when NumPy
loads, so an entry point that learns its run wants it runs itself again with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import cli
from trainer.blas_idle import SPIN_LOG2_CYCLES, for_training_children, let_idle_blas_threads_sleep, wanted_for
from trainer.config import PRESETS, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
# Prints the variable as this process sees it, then asks for a restart for the preset in argv[1].
RESTARTING = (
    "import os, sys; from trainer.blas_idle import restart_for; from trainer.config import PRESETS; "
    "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), flush=True); restart_for(PRESETS[sys.argv[1]]); "
    "print('ran', flush=True)"
)


def run_fresh(*args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in the checkout, without an OPENBLAS_THREAD_TIMEOUT of its own."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_only_runs_that_make_augmented_batches_want_it():
    assert wanted_for(PRESETS["baseline"]) and wanted_for(PRESETS["best"])
    assert not wanted_for(PRESETS["seed"]) and not wanted_for(PRESETS["fast"])
    assert not wanted_for(TrainConfig(augment_shift=2))  # whole-pixel shifts: made inline, no helper
    assert wanted_for(TrainConfig(augment_contrast=0.2))


def test_an_augmented_run_restarts_once_with_it():
    run = run_fresh("-c", RESTARTING, "baseline")
    assert run.stdout.split() == ["None", SPIN_LOG2_CYCLES, "ran"], run.stderr


def test_a_plain_run_keeps_spinning_threads_and_does_not_restart():
    run = run_fresh("-c", RESTARTING, "fast")
    assert run.stdout.split() == ["None", "ran"], run.stderr


def test_the_trainers_entry_point_hands_each_run_to_the_restart():
    patched = (
        "import runpy, trainer.blas_idle as b; "
        "b.restart_for = lambda config: print('asked for', config.preset) or exit(0); "
        "runpy.run_module('trainer', run_name='__main__')"
    )
    run = run_fresh("-c", patched, "train", "--preset", "baseline", "--epochs", "1")
    assert run.stdout.strip() == "asked for baseline", run.stderr


def test_the_cli_shows_the_run_before_it_starts():
    class Seen(Exception):
        pass

    def before_run(config: TrainConfig) -> None:
        raise Seen(config)

    with pytest.raises(Seen) as seen:
        cli.main(["train", "--preset", "best", "--epochs", "2"], before_run=before_run)
    config = seen.value.args[0]
    assert (config.preset, config.epochs) == ("best", 2)
    with pytest.raises(Seen) as seen:  # the research script's form too
        cli.main(["run", "30", "0.1", "20", "0"], before_run=before_run)
    assert seen.value.args[0].iters == 30


def test_a_services_augmented_jobs_inherit_it_and_the_service_keeps_its_own(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    show = [sys.executable, "-c", "import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"]
    with for_training_children(True):
        augmented = subprocess.run(show, capture_output=True, text=True, timeout=60)
    with for_training_children(False):
        plain = subprocess.run(show, capture_output=True, text=True, timeout=60)
    assert (augmented.stdout.strip(), plain.stdout.strip()) == (SPIN_LOG2_CYCLES, "None")
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ  # the serving process's own is untouched
    run = run_fresh("-c", "import os, service.__main__; print(os.getenv('OPENBLAS_THREAD_TIMEOUT'))")
    assert run.stdout.strip() == "None", run.stderr  # serving spins as before: it answered faster so


def test_an_operators_own_setting_wins(monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "20")
    let_idle_blas_threads_sleep()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "20"
    env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": "20"}
    run = subprocess.run(
        [sys.executable, "-c", RESTARTING, "baseline"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert run.stdout.split() == ["20", "ran"], run.stderr
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    let_idle_blas_threads_sleep()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == SPIN_LOG2_CYCLES
