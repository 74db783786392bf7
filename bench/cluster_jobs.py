"""Cancel and worker death in a cluster: how long until a cancelled job's process group is gone, and
until a killed worker's job is failed and the next job trains on another worker.

    .venv/bin/python bench/cluster_jobs.py                 # 10 cancels, 3 worker deaths
    .venv/bin/python bench/cluster_jobs.py --cancels 20 --deaths 5 --dead-after-s 10

Two `python -m trainer worker`s (heartbeat 1 s, `--dead-after-s`) on a fresh database of the local
PostgreSQL and a folder registry, training real jobs (preset fast on MNIST). Jobs are put in through
the replica's side of the queue (trainer.cluster.submit), as `POST /train` does.

- Cancel: a job trains (progress past 0), then `cancel()` (what `DELETE /train/{id}` calls); the time
  is from that call until no process of the job's group is left (`killpg(pgid, 0)`, polled every 10 ms).
- Death: a job trains, its worker and the worker's child get SIGKILL (a lost host); the times are
  until the record says `failed`, and until the next job submitted at that moment is `running` on
  the other worker. With the cluster-wide limit of one running job (the default), the next job
  waits for the dead one's place: it starts once that job is failed. A new worker replaces the
  killed one before the next round.

Targets (issue 15): cancel <= 2 s; the job failed within the dead-after time (plus a heartbeat).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _serve_common as common

sys.path.insert(0, str(common.ROOT))
from tests.realservers import fresh_database, postgres_server
from trainer.cluster.submit import JobQueue
from trainer.config import TrainConfig

PARAMS = {"preset": "fast", "epochs": 30}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cancels", type=int, default=10)
    parser.add_argument("--deaths", type=int, default=3)
    parser.add_argument("--dead-after-s", type=float, default=5.0)
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/cluster_jobs-<time>.json)"
    )
    return parser.parse_args(argv)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def child_of(job_id: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"trainer.cluster.child" in cmdline and job_id.encode() in cmdline:
                return int(entry.name)
    raise RuntimeError(f"no training process for job {job_id}")


def wait(check: Any, deadline_s: float, poll_s: float = 0.01) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > deadline_s:
            raise RuntimeError(f"not within {deadline_s} s")
        time.sleep(poll_s)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = TrainConfig.from_preset("fast", "mnist", epochs=30)
    scratch = Path(tempfile.mkdtemp(prefix="cluster-jobs-"))
    workers: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        log = (scratch / f"worker-{len(workers)}.log").open("wb")
        worker = subprocess.Popen(
            [common.PYTHON, "-m", "trainer", "worker", "--database-url", database_url,
             "--models-dir", str(scratch / "models"), "--data-dir", str(common.DATA_DIR),
             "--cache-dir", str(scratch / "cache"), "--heartbeat-s", "1", "--dead-after-s",
             str(args.dead_after_s), "--cancel-grace-s", "5"],
            cwd=common.ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MNIST_ROBUSTNESS_SAMPLE": "0"},
        )  # fmt: skip
        workers.append(worker)
        return worker

    def training(queue: JobQueue, job: str) -> bool:
        record = queue.db.get(job)
        return record["state"] == "running" and ((record["progress"] or {}).get("percent") or 0) > 0

    cancels: list[float] = []
    deaths: list[dict[str, float]] = []
    with postgres_server() as admin, fresh_database(admin) as database_url:
        queue = JobQueue(database_url, max_running=2, queue_size=2)
        try:
            start_worker()
            start_worker()
            for n in range(args.cancels):
                job = queue.submit(PARAMS, config)["id"]
                wait(lambda j=job: training(queue, j), 120, 0.1)
                pgid = child_of(job)
                started = time.perf_counter()
                queue.cancel(job)
                wait(lambda g=pgid: not group_alive(g), 30)
                cancels.append(time.perf_counter() - started)
                print(
                    f"cancel {n + 1}: process group gone {cancels[-1]:.3f} s after the request",
                    file=sys.stderr,
                )
            for n in range(args.deaths):
                job = queue.submit(PARAMS, config)["id"]
                wait(lambda j=job: training(queue, j), 120, 0.1)
                victim = queue.db.get(job)["worker"]
                pid = int(victim.rsplit(":", 1)[1])
                child = child_of(job)
                os.kill(pid, signal.SIGKILL)
                os.killpg(child, signal.SIGKILL)
                killed = time.perf_counter()
                following = queue.submit(PARAMS, config)["id"]
                seen: dict[str, float] = {}
                while len(seen) < 2 and time.perf_counter() - killed < 60:  # both watched at once
                    now = time.perf_counter() - killed
                    if "failed" not in seen and queue.db.get(job)["state"] == "failed":
                        seen["failed"] = now
                    if "running" not in seen and queue.db.get(following)["state"] == "running":
                        seen["running"] = now
                    time.sleep(0.05)
                deaths.append({"failed_after_s": seen["failed"], "next_running_after_s": seen["running"]})
                print(
                    f"death {n + 1}: job failed {seen['failed']:.2f} s after SIGKILL; the next job "
                    f"running on the other worker {seen['running']:.2f} s after",
                    file=sys.stderr,
                )
                queue.cancel(following)
                wait(lambda j=following: queue.db.get(j)["state"] != "running", 30, 0.05)
                start_worker()
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.terminate()
            for worker in workers:
                worker.wait(30)
            queue.close()
    payload = {
        "benchmark": "cluster_jobs",
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": common.machine(),
        "cancel_s": cancels,
        "deaths": deaths,
        "summary": {
            "cancel_s_max": max(cancels, default=None),
            "cancel_s_median": common.median(cancels) if cancels else None,
            "failed_after_s_max": max((d["failed_after_s"] for d in deaths), default=None),
            "next_running_after_s_max": max((d["next_running_after_s"] for d in deaths), default=None),
        },
    }
    path = common.write_json("cluster_jobs", payload, args.out)
    print(f"{payload['summary']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
