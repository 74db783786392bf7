"""How long an event loop stalls while the shadow computes: in worker processes, or in idle-priority threads.

    .venv/bin/python bench/shadow_stalls.py                       # 3 rounds of 4 s, a busy loop beside
    .venv/bin/python bench/shadow_stalls.py --no-hog --seconds 2

Why: a thread of the serving process at SCHED_IDLE holds the GIL between its NumPy calls; when
another program takes the core from it there, the event loop waits for the GIL until the idle
thread runs again. This measures that without a server: one process pinned to one CPU runs a
uvloop loop whose every turn does a request's work (one digit through the 784-512-256-10
network, `current`'s answer) and hands the digit to a `ShadowRunner`, as /predict under a shadow
policy does; beside it, unless `--no-hog`, a plain busy loop at the same nice on the same CPU
(another program wanting the core). Modes, interleaved over rounds:

- `none`: no shadow;
- `process`: the shadow as it serves (service.shadow_worker: the passes in worker processes);
- `thread`: the passes in the runner's own threads, the idle thread at SCHED_IDLE (the design
  before 2026-12-07).

Printed per mode: loop turns a second, p50 / p99 / p99.9 / max of a turn's wall time, the
digits the shadow compared and dropped. Linux only (SCHED_IDLE, taskset-like affinity).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import _serve_common  # noqa: F401  (the repo root on sys.path)
import numpy as np
import uvloop
from threadpoolctl import threadpool_limits

from mlp import MLP
from service.loaded_model import LoadedModel
from service.metrics import Metrics
from service.policy_metrics import VersionMetrics
from service.shadow import ShadowRunner
from service.shadow_ring import RowRing
from service.shadow_worker import Worker

MODES = ("none", "process", "thread")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="the CPU the loop (and the hog) run on")
    parser.add_argument("--no-hog", action="store_true", help="no busy loop beside")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one run, in a child
    return parser.parse_args(argv)


class InThread:
    """The passes in the calling thread, the idle one lowered to SCHED_IDLE: the design before."""

    def __init__(self, idle: bool, ring: RowRing) -> None:
        self.idle = idle
        self.ring = ring
        self._lowered = False

    def predict(self, shadow: LoadedModel, start: int, count: int) -> float:
        if self.idle and not self._lowered:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            self._lowered = True
        started = time.perf_counter()
        end = start + count
        self.ring.ours[start:end] = shadow.predict_proba(self.ring.rows[start:end])
        return time.perf_counter() - started

    def cpu_seconds(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def one_run(mode: str, seconds: float) -> dict[str, Any]:
    """The loop for `seconds` in this process: turns' wall times, the shadow's figures."""
    threadpool_limits(limits=1, user_api="blas")  # as a serving process
    rng = np.random.default_rng(0)
    current = LoadedModel("v0001", MLP([784, 512, 256, 10], rng=rng), {})
    shadow = LoadedModel("v0002", MLP([784, 512, 256, 10], rng=rng), {})
    digits = ((rng.random((64, 784)) < 0.2) * 200).astype(np.uint8)
    recorder = VersionMetrics(Metrics(), "mnist")
    runner = ShadowRunner(recorder, worker=InThread if mode == "thread" else Worker)
    if mode != "none":  # workers started and weights sent before the clock starts
        runner.submit(shadow, "v0001", digits[:1], current.predict_proba(digits[:1]))
        runner.wait_idle(30)
    turns: list[float] = []

    async def loop() -> None:
        end = time.perf_counter() + seconds
        i = 0
        while (started := time.perf_counter()) < end:
            row = digits[i % 64 : i % 64 + 1]
            probabilities = current.answer(row).probabilities
            if mode != "none":
                runner.submit(shadow, "v0001", row, probabilities)
            await asyncio.sleep(0)
            turns.append(time.perf_counter() - started)
            i += 1

    uvloop.run(loop())
    runner.wait_idle(30)
    runner.stop()
    side = recorder.tally.totals().get(("v0002", "shadow"))
    ms = np.array(turns) * 1e3
    return {
        "mode": mode,
        "turns_per_s": len(ms) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "p999_ms": float(np.percentile(ms, 99.9)),
        "max_ms": float(ms.max()),
        "compared": 0 if side is None else side.agree + side.disagree,
        "dropped": 0 if side is None else side.dropped,
        "threads": threading.active_count(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode is not None:
        os.sched_setaffinity(0, {args.cpu})
        print(json.dumps(one_run(args.mode, args.seconds)))
        return 0
    hog = None
    if not args.no_hog:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(hog.pid, {args.cpu})
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                command = [sys.executable, __file__, "--mode", mode, "--seconds", str(args.seconds)]
                out = subprocess.run(
                    [*command, "--cpu", str(args.cpu)], capture_output=True, text=True, check=True
                ).stdout
                run = json.loads(out.strip().splitlines()[-1])
                results[mode].append(run)
                print(
                    f"round {r} {mode:<8} {run['turns_per_s']:7.0f} turns/s  p50 {run['p50_ms']:.3f}  "
                    f"p99 {run['p99_ms']:.2f}  p99.9 {run['p999_ms']:.2f}  max {run['max_ms']:7.1f} ms  "
                    f"compared {run['compared']}  dropped {run['dropped']}",
                    file=sys.stderr,
                )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    print("\n| mode | turns/s | p50 ms | p99 ms | p99.9 ms | max ms (median, worst) |")
    print("|---|---|---|---|---|---|")
    for mode, runs in results.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(np.median([run[key] for run in runs]))

        worst = max(run["max_ms"] for run in runs)
        print(
            f"| {mode} | {med('turns_per_s'):.0f} | {med('p50_ms'):.3f} | {med('p99_ms'):.2f} | "
            f"{med('p999_ms'):.2f} | {med('max_ms'):.1f}, {worst:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
