"""A new user's first run, as the README writes it, on a copy of the repository.

The copy holds what a clone holds (no `state/`, no `data/`, nothing beside the checkout); its
`.venv` is the virtualenv running these tests, so `make run` installs nothing. The README's own
lines are run by bash in the copy: `make run`, the curl lines (predict the examples, a training job
through the API, its log, promote, roll back) and the client's (predict, `train --wait`, jobs,
models, promote). Two things differ from a user's machine, both through documented settings:
`MNIST_PORT` is a free port instead of 8000 (the lines are rewritten to it), and `MNIST_DATA_DIR`
points at a small MNIST-shaped folder this test writes, so the jobs download nothing
(`MNIST_ROBUSTNESS_SAMPLE=0` keeps them short).

Afterwards the shipped `models/` is byte for byte what it was, and what the user trained is in
`state/models/`, which git ignores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from testkit import ROOT, free_port, write_idx

from trainer.job_states import FINAL_STATES

README = (ROOT / "README.md").read_text()
# What a clone does not have: the user's and the tools' files (.gitignore), and git itself.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "state", "data", "runs", "test-artifacts", "__pycache__", ".pytest_cache", ".ruff_cache",
    ".peers", "results", "*.egg-info", ".schemathesis", "schemathesis-report", ".lock", ".*.tmp",
)  # fmt: skip
READY_S = 90
JOB_S = 240
FINAL = FINAL_STATES


def block_after(heading: str) -> list[str]:
    """The command lines of the first shell block after `heading`, continuations joined."""
    section = README.split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, heading
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("first-run") / "mnist-service"
    shutil.copytree(ROOT, folder, ignore=NOT_IN_A_CLONE, symlinks=True)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


@pytest.fixture(scope="module")
def local_mnist(
    tmp_path_factory: pytest.TempPathFactory, digits: Callable[..., tuple[np.ndarray, np.ndarray]]
):
    folder = tmp_path_factory.mktemp("my-mnist")
    write_idx(folder, "train", *digits(5600, seed=0))  # the fast preset holds out 5000 for validation
    write_idx(folder, "t10k", *digits(300, seed=1))
    return folder


def shipped_files(checkout: Path) -> dict[str, bytes]:
    models = checkout / "models"
    return {str(p.relative_to(models)): p.read_bytes() for p in sorted(models.rglob("*")) if p.is_file()}


def bash(line: str, checkout: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{line}"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{line}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_readme_quick_start_works_as_written(checkout: Path, local_mnist: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNIST_", "PROMETHEUS_"))}
    env.update(MNIST_PORT=str(port), MNIST_DATA_DIR=str(local_mnist), MNIST_ROBUSTNESS_SAMPLE="0")
    env["MNIST_URL"] = url = f"http://127.0.0.1:{port}"  # the client's setting for the same server
    env["PYTHONUNBUFFERED"] = "1"

    def as_written(line: str) -> str:
        return line.replace("http://127.0.0.1:8000", url)

    shipped = shipped_files(checkout)
    quick_start = block_after("On a fresh machine (Debian/Ubuntu with Python 3.11+ and `make`):")
    start = next(line for line in quick_start if line.startswith("make run"))
    # `-o`: the prerequisites that would build .venv count as done (its .venv is this test's).
    command = start.split("#")[0].replace("make run", "make -o .venv/.runtime -o .venv/.installed run")
    log = (checkout.parent / "service.log").open("wb")
    service = subprocess.Popen(
        ["bash", "-c", command],
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        bash(f".venv/bin/python -m client ready --wait {READY_S}", checkout, env, timeout=READY_S + 30)
        # The shipped baseline is what a first run serves, from the user's own registry.
        assert (checkout / "state" / "models" / "mnist" / "current").is_file()

        curl = block_after("## What you can do with it")
        predictions = [json.loads(bash(as_written(line), checkout, env)) for line in curl[:3]]
        digits = [[p["digit"] for p in answer["predictions"]] for answer in predictions]
        assert digits == [[7], [2, 3], [7]], predictions
        assert len(predictions[2]["predictions"][0]["input"]) == 28  # ?debug=1: the 28x28 it saw

        token_line, submit = curl[3], curl[4]
        assert token_line.startswith("TOKEN=$(")
        job = json.loads(bash(f"{token_line}\n{as_written(submit)}", checkout, env))
        assert job["state"] == "queued" and job["params"]["epochs"] == 3, job
        follow = next(line for line in curl if line.startswith("curl http://127.0.0.1:8000/train/<job id> "))
        deadline = time.monotonic() + JOB_S
        while (record := json.loads(bash(as_written(follow).replace("<job id>", job["id"]), checkout, env)))[
            "state"
        ] not in FINAL:
            assert time.monotonic() < deadline, record
            time.sleep(0.5)
        assert record["state"] == "succeeded", record
        assert record["version"] == "v0003" and record["progress"]["test_accuracy"] is not None

        rest = [
            as_written(line).replace("<job id>", job["id"])
            for line in curl[5:]
            if "/train/<job id> " not in line
        ]
        answers = {line: bash(f"{token_line}\n{line}", checkout, env) for line in rest}
        job_log = next(out for line, out in answers.items() if line.split(" #")[0].rstrip().endswith("/log"))
        assert "epoch 3/3" in job_log and "published v0003" in job_log
        moves = [
            json.loads(out) for line, out in answers.items() if "/promote" in line or "/rollback" in line
        ]
        assert [(m["current"], m["previous"]) for m in moves] == [("v0003", "v0002"), ("v0002", "v0003")], (
            moves
        )
        assert (checkout / "w1.png").read_bytes().startswith(b"\x89PNG")

        client = block_after("## Command-line client")
        outputs = {}
        for line in client:
            if line.startswith("make demo"):
                continue  # tested on its own (tests/client/test_make.py)
            outputs[line.split("#")[0].split()[3]] = bash(line, checkout, env, timeout=JOB_S)
        assert re.search(r"seven\.png\s+7\b", outputs["predict"]), outputs["predict"]
        assert re.match(r"job [0-9a-f]{32} succeeded: v0004, test accuracy", outputs["train"])
        assert "v0004" in outputs["models"] and outputs["token"].strip()
        assert "v0004 is current (was v0002)" in outputs["promote"]
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
        log.close()
        print((checkout.parent / "service.log").read_text()[-3000:])

    # Nothing the user did touched what git tracks; their versions are in their own registry.
    assert shipped_files(checkout) == shipped
    user = checkout / "state" / "models" / "mnist"
    assert sorted(p.name for p in user.glob("v*.npz")) == [f"v000{n}.npz" for n in range(1, 5)]
    ignored = (checkout / ".gitignore").read_text().split()
    assert "state/" in ignored
