"""/predict latency while a training job runs: in the API's own child process, or on a worker elsewhere.

    .venv/bin/python bench/train_isolation.py
    .venv/bin/python bench/train_isolation.py --duration 20 --rounds 3 --connections 8

Two services serve the shipped model, each pinned to CPU 0 (`taskset`): the embedded one (jobs
are its children, so they share CPU 0 with it) and a cluster replica (MNIST_DATABASE_URL on a fresh
database of the local PostgreSQL), whose jobs go to one `python -m trainer worker` pinned to CPU 1.
wrk posts one MNIST digit with `--connections` connections for `--duration` seconds, in four
phases per round: each service idle, and each while a real training job (preset fast on real
MNIST) runs; the job is cancelled after the phase. Rounds interleave, figures are medians over
rounds. A two-core machine has no third core for wrk: `--wrk-cpu 1` (the default) puts it beside
the worker, where the job delays the client's own reads and writes too; `--wrk-cpu 0` beside the
API, where it costs the API the same in every phase and the worker's core holds the job alone.

`--control` adds a fifth phase: the cluster replica while a bare busy loop (`while True: pass`, no
memory traffic, no I/O) runs pinned to CPU 1 in place of the job. It says what any busy program on
the other core costs the API on this machine, which is the floor a job on that core can reach: on
a two-vCPU VM the two cores are not two hosts.

Target (issue 15): with the job on a worker, the API's p99 stays what it is without a job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import _serve_common as common
from _wrk import Wrk

sys.path.insert(0, str(common.ROOT))
from tests.realservers import fresh_database, postgres_server

JOB = {"preset": "fast", "epochs": 30}  # long enough to outlast a phase; cancelled after it
BUSY_LOOP = "while True: pass"  # --control: a program that only occupies its core


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--duration", type=int, default=15, help="seconds of wrk per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-cpu", choices=("0", "1"), default="1", help="the CPU wrk runs on (see above)")
    parser.add_argument("--control", action="store_true", help="add the busy-loop phase (see above)")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/train_isolation-<time>.json)"
    )
    return parser.parse_args(argv)


def call(method: str, url: str, body: dict | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {common.TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def with_job(server: common.Server, run: Any) -> tuple[Any, dict[str, Any]]:
    """Submit the job, wait until it trains, run `run()`, cancel it; (result, job while it ran)."""
    job = call("POST", server.url + "/train", JOB)
    deadline = time.monotonic() + 120
    while True:
        record = call("GET", f"{server.url}/train/{job['id']}")
        if record["state"] == "running" and (record["progress"]["percent"] or 0) > 0:
            break
        if record["state"] not in ("queued", "running") or time.monotonic() > deadline:
            raise RuntimeError(f"the training job did not start training: {record}")
        time.sleep(0.2)
    result = run()
    during = call("GET", f"{server.url}/train/{job['id']}")
    with contextlib.suppress(urllib.error.HTTPError):  # it ended by itself meanwhile
        call("DELETE", f"{server.url}/train/{job['id']}")
    return result, during


def with_busy_loop(run: Any) -> Any:
    """`run()` while a bare busy loop occupies CPU 1 (started and given a moment before)."""
    loop = subprocess.Popen([*common.taskset("1"), common.PYTHON, "-c", BUSY_LOOP])
    try:
        deadline = time.monotonic() + 10
        while common.process_cpu_seconds(loop.pid) < 0.2 and time.monotonic() < deadline:  # it runs
            time.sleep(0.05)
        return run()
    finally:
        loop.kill()
        loop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_models_dir(args.models_dir)
    images, _ = common.load_mnist_test()
    body, content_type = common.multipart([("digit.png", common.encode_png(images[0]), "image/png")])
    wrk = Wrk(body, content_type, cpus=args.wrk_cpu)
    scratch = Path(tempfile.mkdtemp(prefix="train-isolation-"))
    shutil.copytree(args.models_dir / "mnist", scratch / "models" / "mnist")
    data_env = {"MNIST_DATA_DIR": str(common.DATA_DIR), "MNIST_ROBUSTNESS_SAMPLE": "0",
                "MNIST_CACHE_DIR": str(scratch / "cache")}  # fmt: skip
    phases: dict[str, list[dict[str, Any]]] = {}
    with postgres_server() as admin, fresh_database(admin) as database_url:
        embedded = common.service_server(
            "embedded", scratch / "models", scratch / "state-e", cpus="0", extra_env=data_env
        )
        cluster = common.service_server(
            "cluster", scratch / "models", scratch / "state-c", cpus="0",
            extra_env={**data_env, "MNIST_DATABASE_URL": database_url},
        )  # fmt: skip
        worker_log = (scratch / "worker.log").open("wb")
        worker = subprocess.Popen(
            [*common.taskset("1"), common.PYTHON, "-m", "trainer", "worker", "--database-url", database_url,
             "--models-dir", str(scratch / "models"), "--data-dir", str(common.DATA_DIR),
             "--cache-dir", str(scratch / "cache")],
            cwd=common.ROOT, stdout=worker_log, stderr=subprocess.STDOUT,
            env={**os.environ, "MNIST_ROBUSTNESS_SAMPLE": "0"},
        )  # fmt: skip
        try:
            with common.running([embedded, cluster], scratch):
                for n in range(args.rounds):
                    order = [("embedded", embedded), ("cluster", cluster)]
                    for name, server in order if n % 2 == 0 else reversed(order):

                        def measure(s: common.Server = server) -> Any:
                            return wrk.run(s.url + "/predict", args.connections, args.duration)

                        measured = {"idle": measure()}
                        measured["training"], during = with_job(server, measure)
                        if args.control and name == "cluster":
                            measured["busy loop"] = with_busy_loop(measure)
                        for phase, result in measured.items():
                            phases.setdefault(f"{name} {phase}", []).append(
                                {"p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "rps": result.rps,
                                 "failed": result.failed}
                            )  # fmt: skip
                        figures = "; ".join(
                            f"{phase} p99 {result.p99_ms:.2f} ms {result.rps:.0f} req/s"
                            for phase, result in measured.items()
                        )
                        epoch = during["progress"]["epoch"]
                        print(f"round {n + 1} {name} (the job at epoch {epoch}): {figures}", file=sys.stderr)
        finally:
            worker.terminate()
            worker.wait(30)
            worker_log.close()
            wrk.close()
    summary = {
        label: {key: common.median([r[key] for r in runs]) for key in ("p50_ms", "p99_ms", "rps", "failed")}
        for label, runs in phases.items()
    }
    payload = {
        "benchmark": "train_isolation",
        "args": {k: str(v) for k, v in vars(args).items()},
        "job": JOB,
        "machine": common.machine(),
        "summary": summary,
        "runs": phases,
    }
    path = common.write_json("train_isolation", payload, args.out)
    for label, figures in summary.items():
        print(f"{label:<18} p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms  "
              f"{figures['rps']:7.0f} req/s  failed {figures['failed']:.0f}")  # fmt: skip
    print(f"-> {path}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
