"""`mnist train` and the job commands against a real service whose jobs train on a tiny local
dataset (300 synthetic digits, MNIST_DATA_DIR pointing at them): each job takes seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from clientkit import ROOT, Server, poll, publish_tiny, start_server
from conftest import Mnist
from testkit import write_idx

from client.config import STATE_DIR_ENV, URL_ENV
from client.train_options import FIELDS, FLAGS
from service.schemas_train import TrainRequest

QUICK = ["--hidden", "16", "--epochs", "2", "--batch-size", "32", "--val-size", "50"]
JOB_DEADLINE_S = 90.0
# A job that would run for minutes: only ever cancelled.
ENDLESS = ["--hidden", "16", "--iters", "1000000", "--batch-size", "8", "--val-size", "50"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, digits: Callable[..., tuple[np.ndarray, np.ndarray]]
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("client-train")
    data = folder / "tiny-mnist"
    data.mkdir()
    write_idx(data, "train", *digits(300, seed=0))
    write_idx(data, "t10k", *digits(100, seed=1))
    assert publish_tiny(folder / "models", seed=0, promote=True) == "v0001"
    server = start_server(folder, folder / "models", data)
    yield server
    server.stop()


def job_id_in(text: str) -> str:
    found = re.search(r"job ([0-9a-f]{32})", text)
    assert found, text
    return found.group(1)


def test_train_options_are_the_apis_fields() -> None:
    mirrored = {field for field, _, _ in FIELDS} | {field for field, _ in FLAGS}
    assert mirrored == set(TrainRequest.model_fields)


def test_train_wait_follows_the_job_with_a_progress_bar(server: Server, mnist: Mnist) -> None:
    run = mnist("train", *QUICK, "--wait", env=server.env())
    assert run.code == 0, run.err
    job_id = job_id_in(run.out)
    job = httpx.get(f"{server.url}/train/{job_id}").json()
    assert (job["state"], job["promoted"]) == ("succeeded", False)
    version = job["version"]
    accuracy = httpx.get(f"{server.url}/models/{version}").json()["test_accuracy"]
    assert run.out == (
        f"job {job_id} succeeded: {version}, test accuracy {100 * accuracy:.2f} % "
        f"(a candidate; make it current with: mnist promote {version})\n"
    )
    frames = run.err.split("\r")  # tqdm redraws its line
    # While it ran, the bar said so (how far the first poll finds it depends on the machine's speed).
    stages = "queued|loading data|training|evaluating|plotting|publishing"
    assert any(re.match(rf"({stages}) +\d+%\|", f.strip()) for f in frames), run.err
    last = frames[-1].strip() or frames[-2].strip()
    assert re.match(r"succeeded 100%\|█+\| \d\d:\d\d, epoch 2/2, test accuracy \d+\.\d\d %", last), last
    assert f"test accuracy {100 * accuracy:.2f} %" in last  # the job's figure is the published version's

    listed = mnist("jobs", env=server.env())
    assert listed.code == 0
    row = next(line for line in listed.out.splitlines() if line.startswith(job_id))
    assert row.split()[1:4] == ["succeeded", "fast", version]

    shown = mnist("job", job_id, env=server.env())
    assert shown.code == 0
    assert f"version:  {version}\n" in shown.out and "state:    succeeded\n" in shown.out
    assert 'params:   preset="fast", hidden=[16], epochs=2, batch_size=32, val_size=50' in shown.out
    assert json.loads(mnist("job", job_id, "--json", env=server.env()).out) == job
    again = mnist("job", job_id, "--wait", "--no-progress", env=server.env())  # ended: returns at once
    assert (again.code, again.err) == (0, "")
    assert again.out == run.out


def test_train_promote_wait_json_makes_the_version_current(server: Server, mnist: Mnist) -> None:
    run = mnist("train", *QUICK, "--promote", "--wait", "--no-progress", "--json", env=server.env())
    assert run.code == 0, run.err
    assert run.err == ""  # no bar
    job = json.loads(run.out)
    assert (job["state"], job["promoted"], job["params"]["promote"]) == ("succeeded", True, True)
    assert httpx.get(f"{server.url}/models").json()["current"] == job["version"]


def test_train_without_wait_prints_the_job_id(server: Server, mnist: Mnist) -> None:
    run = mnist("train", *ENDLESS, "--json", env=server.env())
    assert run.code == 0, run.err
    job = json.loads(run.out)
    assert job["state"] in ("queued", "running") and job["params"]["iters"] == 1_000_000
    cancelled = mnist("cancel", job["id"], env=server.env())
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out in (
        f"job {job['id']} cancelled\n",
        f"job {job['id']} running (still stopping; it will end cancelled)\n",
    )
    ended = poll(
        lambda: httpx.get(f"{server.url}/train/{job['id']}").json()["state"] != "running",
        JOB_DEADLINE_S,
        "the cancel",
    )
    assert ended
    followed = mnist("job", job["id"], "--wait", env=server.env())
    assert (followed.code, followed.out) == (4, "")
    assert followed.err.strip().splitlines()[-1].startswith(f"mnist: error: job {job['id']} cancelled: ")


def start_following(server: Server, *argv: str) -> subprocess.Popen:
    """`python -m client train ARGV --wait` in a process of its own, as from a terminal."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in (URL_ENV, STATE_DIR_ENV)},
        "PYTHONPATH": str(ROOT),
        **server.env(),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "client", "train", *argv, "--wait"],
        env=env,
        cwd=server.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def running_job(server: Server) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        jobs = httpx.get(f"{server.url}/train").json()["jobs"]
        return next((j for j in jobs if j["state"] == "running" and j["params"].get("iters")), None)

    return poll(find, JOB_DEADLINE_S, "the job to run")


def test_train_wait_exits_4_when_the_job_is_cancelled(server: Server, mnist: Mnist) -> None:
    follower = start_following(server, *ENDLESS)
    try:
        job = running_job(server)
        assert mnist("cancel", job["id"], env=server.env()).code == 0
        out, err = follower.communicate(timeout=JOB_DEADLINE_S)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert (follower.returncode, out) == (4, "")
    assert err.strip().splitlines()[-1].startswith(f"python -m client: error: job {job['id']} cancelled: ")


def test_train_wait_exits_4_when_the_job_fails(server: Server, mnist: Mnist) -> None:
    """More validation images than the dataset has: the API accepts it, the training fails."""
    run = mnist("train", "--hidden", "16", "--epochs", "1", "--val-size", "20000", "--wait", env=server.env())
    assert (run.code, run.out) == (4, "")
    error = run.err.strip().splitlines()[-1]
    assert re.match(r"mnist: error: job [0-9a-f]{32} failed: .*validation size 20000", error), error


def test_parameters_the_server_refuses_are_one_line_and_exit_1(server: Server, mnist: Mnist) -> None:
    before = httpx.get(f"{server.url}/train").json()["jobs"]
    bad_preset = mnist("train", "--preset", "slowest", "--wait", env=server.env())
    assert (bad_preset.code, bad_preset.out) == (1, "")
    assert "preset" in bad_preset.error_line and "(HTTP 422 validation_error)" in bad_preset.error_line
    both = mnist("train", "--epochs", "1", "--iters", "10", env=server.env())
    assert both.code == 1 and "epochs or iters" in both.error_line
    assert httpx.get(f"{server.url}/train").json()["jobs"] == before  # nothing was queued


def test_train_without_a_token_is_refused(server: Server, mnist: Mnist, tmp_path: Any) -> None:
    run = mnist("train", *QUICK, env={URL_ENV: server.url, STATE_DIR_ENV: str(tmp_path)})
    assert run.code == 1 and "(HTTP 401 missing_token)" in run.error_line


def test_ctrl_c_stops_following_not_the_job(server: Server, mnist: Mnist) -> None:
    follower = start_following(server, *ENDLESS)
    try:
        job = running_job(server)
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=JOB_DEADLINE_S)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    try:
        assert (follower.returncode, out) == (130, "")
        assert err.strip().splitlines()[-1] == (
            f"stopped following job {job['id']}; it goes on (stop it with: mnist cancel {job['id']})"
        )
        assert httpx.get(f"{server.url}/train/{job['id']}").json()["state"] == "running"
    finally:
        assert mnist("cancel", job["id"], env=server.env()).code == 0
