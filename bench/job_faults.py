"""Kill or cancel training jobs across their publish window, count lying records: one benchmark, one script.

Issue 11, item 1: a job whose record is not `succeeded` must never leave a published or promoted
version behind, and a cancel must answer what it did. Each trial starts a fresh `python -m service`
(real uvicorn, real child process) on a fresh registry whose `current` is v0001, submits a tiny
job with `"promote": true`, waits until its training is done (progress 100 %: from here on it
evaluates, plots and publishes) and then, after an offset spread over that publish window:

- `kill`: SIGKILL the service (the child is orphaned, as with an OOM kill or a `kill -9`), start
  it again at once on the same folders, wait for the job's ending and for the orphan to be gone;
- `cancel`: `DELETE /train/{id}`, then wait for the job's ending.

Then the registry is compared with the record: the versions whose manifest names the job must be
exactly the record's version (none unless `succeeded`), `current` must have moved exactly when the
record says `promoted`, and a cancel answered 200 must have ended `cancelled`, a 409 `succeeded`.
The publish window is measured first: the shortest of three undisturbed jobs.

    .venv/bin/python bench/job_faults.py                 # 20 trials, 10 kills and 10 cancels
    .venv/bin/python bench/job_faults.py --trials 6 --json /tmp/faults.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from _train_common import ROOT, load_average, machine, write_json  # puts the repo root on the path

from mlp import MLP
from registry import Registry

TOKEN = "bench-token"
JOB = {"hidden": [16], "epochs": 2, "batch_size": 32, "val_size": 50, "promote": True}
FINAL = ("succeeded", "failed", "cancelled")
ORPHAN_ERROR = "the service stopped while this job was running"  # what a restarted service records
DEADLINE_S = 90.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="kills and cancels, alternating (default 20)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument("--keep", action="store_true", help="keep the trial folders (logs, registries)")
    return parser.parse_args(argv)


# -- one service on one folder --------------------------------------------------------------------


def write_tiny_mnist(folder: Path) -> None:
    """300 training and 100 test images of random pixels, un-gzipped IDX: training takes a blink."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 300), ("t10k", 100)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        )
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


class Service:
    def __init__(self, folder: Path, data: Path):
        self.folder, self.data = folder, data
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MNIST_MODELS_DIR": str(self.folder / "models"),
            "MNIST_STATE_DIR": str(self.folder / "state"),
            "MNIST_DATA_DIR": str(self.data),
            "MNIST_CACHE_DIR": str(self.folder / "cache"),
            "MNIST_TOKEN": TOKEN,
            "MNIST_PORT": str(self.port),
            "MNIST_RELOAD_INTERVAL_S": "0.2",
            "MNIST_LOG_LEVEL": "info",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.runs += 1
        with open(self.folder / f"server-{self.runs}.log", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: see {self.folder}")
            with contextlib.suppress(OSError):
                if request("GET", self.url + "/readyz")[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not get ready: see {self.folder}")
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def request(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(check: Any, what: str, deadline_s: float = DEADLINE_S, interval_s: float = 0.01) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(interval_s)


def job_of(service: Service, job_id: str) -> dict[str, Any]:
    status, job = request("GET", f"{service.url}/train/{job_id}")
    assert status == 200, job
    return job


def worker_of(folder: Path, job_id: str) -> tuple[int | None, str | None]:
    """The training child's pid and start time, from the job database (both releases have worker_pid)."""
    with contextlib.closing(sqlite3.connect(folder / "state" / "jobs.sqlite3")) as conn:
        (pid,) = conn.execute("SELECT worker_pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return pid, start_time(pid) if pid else None


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def gone(pid: int | None, started: str | None) -> bool:
    if pid is None:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X") or fields[19] != started


def published_by(registry: Registry, job_id: str) -> list[str]:
    """Versions whose manifest names the job (read by hand: the script also measures older releases)."""
    found = []
    for version in registry.versions():
        with contextlib.suppress(ValueError, OSError):
            manifest = json.loads((registry.folder / f"{version}.json").read_text())
            if isinstance(manifest, dict) and manifest.get("job") == job_id:
                found.append(version)
    return found


# -- trials ---------------------------------------------------------------------------------------


def fresh_folder(root: Path, name: str) -> Path:
    folder = root / name
    registry = Registry(folder / "models", "mnist")
    version = registry.publish(MLP([784, 8, 10], rng=np.random.default_rng(0)), {"test_accuracy": 0.1})
    registry.promote(version)
    return folder


def submit_and_reach_publishing(service: Service) -> tuple[str, float]:
    status, job = request("POST", service.url + "/train", JOB)
    assert status == 202, job
    job_id = job["id"]

    def at_100() -> bool:
        job = job_of(service, job_id)
        if job["state"] in FINAL:
            raise RuntimeError(f"the job ended before its publish phase was seen: {job}")
        return job["state"] == "running" and job["progress"]["percent"] == 100.0

    wait_for(at_100, "progress 100 %")
    return job_id, time.monotonic()


def measure_window(root: Path, data: Path, index: int) -> float:
    """Seconds from progress 100 % to the job's recorded ending, undisturbed."""
    service = Service(fresh_folder(root, f"calibration-{index}"), data)
    service.start()
    try:
        job_id, t100 = submit_and_reach_publishing(service)
        job = wait_for(lambda: (j := job_of(service, job_id))["state"] in FINAL and j, "the ending")
        assert job["state"] == "succeeded" and job["promoted"], job
        return time.monotonic() - t100
    finally:
        service.stop()


def trial(root: Path, data: Path, index: int, kind: str, offset_s: float) -> dict[str, Any]:
    folder = fresh_folder(root, f"{index:02d}-{kind}")
    registry = Registry(folder / "models", "mnist")
    before = registry.current()
    service = Service(folder, data)
    service.start()
    answer: int | None = None
    answer_error: str | None = None
    try:
        job_id, t100 = submit_and_reach_publishing(service)
        pid, started = worker_of(folder, job_id)
        time.sleep(max(0.0, t100 + offset_s - time.monotonic()))
        fault_at = time.monotonic() - t100
        if kind == "kill":
            service.kill()
            service.start()
        else:
            answer, body = request("DELETE", f"{service.url}/train/{job_id}")
            answer_error = body.get("error") if answer >= 300 and isinstance(body, dict) else None
        job = wait_for(lambda: (j := job_of(service, job_id))["state"] in FINAL and j, "the ending")
        orphan_alive_at_ending = not gone(pid, started)
        wait_for(lambda: gone(pid, started), "the training process to end", interval_s=0.05)
        job = job_of(service, job_id)  # what the record says once nothing can change the registry
    finally:
        service.stop()
    mine = published_by(registry, job_id)
    pointer = json.loads(registry.pointer_path.read_text())["version"]
    problems = []
    if job["state"] == "succeeded":
        if mine != [job["version"]]:
            problems.append(f"published {mine}, record says {job['version']}")
        if (pointer == job["version"]) != job["promoted"]:
            problems.append(f"current is {pointer}, record says promoted={job['promoted']}")
    else:
        if mine:
            problems.append(f"a {job['state']} job published {mine}")
        if pointer != before:
            problems.append(f"a {job['state']} job moved current to {pointer}")
    if job["error"] == ORPHAN_ERROR and orphan_alive_at_ending:  # the service's verdict, not the child's
        problems.append("the service recorded it failed while its process still ran")
    if answer == 200 and job["state"] != "cancelled":
        problems.append(f"cancel answered 200 but the job ended {job['state']}")
    if answer == 409 and job["state"] != "succeeded":
        problems.append(f"cancel answered 409 but the job ended {job['state']}")
    return {
        "trial": index,
        "kind": kind,
        "planned_offset_s": round(offset_s, 3),
        "fault_at_s": round(fault_at, 3),
        "http": answer,
        "http_error": answer_error,
        "state": job["state"],
        "version": job["version"],
        "promoted": job["promoted"],
        "published_by_job": mine,
        "current": pointer,
        "error": job["error"],
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="job-faults-"))
    data = root / "tiny-mnist"
    write_tiny_mnist(data)
    started = time.monotonic()
    windows = [measure_window(root, data, i) for i in range(3)]
    window = min(windows)  # the first jobs on a machine are slower: the shortest keeps offsets inside
    print(
        f"publish window (progress 100 % -> recorded ending, undisturbed): {window:.2f} s "
        f"(shortest of {', '.join(f'{w:.2f}' for w in windows)})",
        flush=True,
    )
    per_kind = max(1, args.trials // 2)
    rows = []
    for i in range(args.trials):
        kind = ("kill", "cancel")[i % 2]
        step = i // 2
        offset = window * step / max(1, per_kind - 1)  # 0 .. the whole window, both kinds alike
        row = trial(root, data, i, kind, offset)
        rows.append(row)
        print(
            f"{i:2d} {kind:6s} at {row['fault_at_s']:5.2f} s  http={row['http'] or '-'} "
            f"{row['http_error'] or '':14s} "
            f"{row['state']:9s} version={row['version'] or '-':6s} promoted={row['promoted']!s:5s} "
            f"published={row['published_by_job']} current={row['current']}  "
            f"{'; '.join(row['problems']) or 'ok'}",
            flush=True,
        )
    lying = sum(1 for r in rows if r["state"] != "succeeded" and r["published_by_job"])
    bad = sum(1 for r in rows if r["problems"])
    print(
        f"\n{len(rows)} trials in {time.monotonic() - started:.0f} s: {lying} version(s) published by a job "
        f"whose record is not succeeded; {bad} trial(s) where the record or the answer was untrue"
    )
    payload = {
        "machine": machine(),
        "load_average": load_average(),
        "publish_window_s": window,
        "publish_windows_measured_s": windows,
        "trials": rows,
        "versions_published_by_unsucceeded_jobs": lying,
        "untrue_trials": bad,
        "folder": str(root) if args.keep else None,
    }
    print(f"results: {write_json('job_faults', payload, args.json)}")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
