"""A training job's process yields the CPU: every thread of it, and its autogroup when it leads a session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.priority import train_nice_from_env

ROOT = Path(__file__).resolve().parents[2]
# Starts a thread first (as OpenBLAS does when NumPy loads), then yields, then reports.
PROBE = """
import os, threading
from pathlib import Path
from trainer.priority import yield_cpu
started, done = threading.Event(), threading.Event()
threading.Thread(target=lambda: (started.set(), done.wait()), daemon=True).start()
started.wait()
yield_cpu(int(os.environ["NICE"]))
tasks = Path("/proc/self/task")
nices = sorted(int((tasks / t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in os.listdir(tasks))
group = Path("/proc/self/autogroup")
words = group.read_text().split() if group.exists() else []
print(nices, words[-1] if words else "none")  # empty: the root autogroup, which has no nice of its own
"""


def probe(nice: int, own_session: bool) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**os.environ, "NICE": str(nice)},
        capture_output=True, text=True, timeout=60, start_new_session=own_session,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_every_thread_is_lowered_and_a_session_leader_lowers_its_autogroup():
    nices, group = probe(7, own_session=True).rsplit(" ", 1)
    assert nices == "[7, 7]" or os.getpriority(os.PRIO_PROCESS, 0) > 7  # never raised
    assert group in ("7", "none")  # "none": a kernel without autogroups


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="a kernel without autogroups")
def test_a_process_inside_someone_elses_session_leaves_the_sessions_autogroup_alone():
    words = Path("/proc/self/autogroup").read_text().split()  # empty in the root autogroup (CI's)
    mine = words[-1] if words else "none"
    nices, group = probe(7, own_session=False).rsplit(" ", 1)
    assert (nices, group) == ("[7, 7]", mine)


def test_zero_changes_nothing_and_the_environment_sets_it(monkeypatch):
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert probe(0, own_session=True).startswith(f"[{mine}, {mine}]")
    monkeypatch.setenv("MNIST_TRAIN_NICE", "3")
    assert train_nice_from_env() == 3
    monkeypatch.setenv("MNIST_TRAIN_NICE", "")
    assert train_nice_from_env() == 10
