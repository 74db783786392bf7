"""CPU per `POST /predict` in-process, with no routing policy, a shadow and a canary: no HTTP, no wrk.

    .venv/bin/python bench/policy_cpu.py                                 # 10,000 requests per mode, 7 rounds
    .venv/bin/python bench/policy_cpu.py --requests 5000 --concurrency 1,64
    .venv/bin/python bench/policy_cpu.py --modes shadow --profile        # where a shadow's CPU goes
    .venv/bin/python bench/policy_cpu.py --part routing                  # only what a policy adds

Why: `bench/policy_load.py` needs a quiet machine (two cores: server and wrk); this one measures what
a policy adds to each request on any machine, as CPU time, which other processes' load barely moves.
Each mode's app (`create_app`, one per mode, each on its own copy of the registry, in one process)
is called directly through ASGI, as uvicorn would call it, from a uvloop event loop: `concurrency`
coroutines each send their share of the requests one after the other (1: a client waiting for each
answer; 64: the batcher's turns). The CPU is the process's (`time.process_time`: every thread)
and the shadow's worker processes', from the first request until the shadow has computed
everything queued, per request.
`--part routing` runs only what a policy adds to a request (the version chosen, the answer counted,
the shadow's work queued and computed) on one fixed digit, no ASGI and no answer of its own: what
is left when the machine's noise is too loud for the whole request's few percent.
Rounds interleave the modes; figures are the fewest and the median over rounds. `--profile` runs
cProfile over one more run of each mode and prints its top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import io
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _serve_common as common
import numpy as np
import uvloop
from starlette.requests import Request
from starlette.responses import Response
from threadpoolctl import threadpool_limits

from registry import Policy, utc_now
from service.app import create_app
from service.settings import Settings
from service.state import AppState

SHADOW_CHUNK = 1000  # --part routing: requests between waits for the shadow (its queue holds 4,096)
MODES = {"none": None, "shadow": ("shadow", 100.0), "canary": ("canary", 10.0)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--modes", default="none,shadow,canary", help="which of none, shadow, canary")
    parser.add_argument("--concurrency", default="1", help="coroutines sending at once, e.g. 1,64")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per mode and round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved repeats")
    parser.add_argument("--image", type=int, default=0, help="which t10k digit to post")
    parser.add_argument("--profile", action="store_true", help="also cProfile one run of each mode")
    parser.add_argument(
        "--part",
        choices=("requests", "routing"),
        default="requests",
        help="whole requests through ASGI, or only what a policy adds to each (the routing and its counts)",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/policy_cpu-<time>.json)"
    )
    return parser.parse_args(argv)


class Asgi:
    """One app driven through ASGI by hand: its lifespan, and requests with a fixed body."""

    def __init__(self, app: Any):
        self.app = app
        self._lifespan: asyncio.Queue[dict] = asyncio.Queue()
        self._events: asyncio.Queue[dict] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        async def receive() -> dict:
            return await self._lifespan.get()

        async def send(message: dict) -> None:
            await self._events.put(message)

        self._task = asyncio.create_task(
            self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        )
        await self._lifespan.put({"type": "lifespan.startup"})
        message = await self._events.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"start-up failed: {message}")

    async def stop(self) -> None:
        await self._lifespan.put({"type": "lifespan.shutdown"})
        await self._events.get()
        assert self._task is not None
        await self._task

    @property
    def state(self) -> AppState:
        return self.app.state.services

    async def post(self, path: str, body: bytes, content_type: str) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # a client that stays connected
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


def cpu_now(state: AppState) -> float:
    """CPU seconds so far of this process and of the shadow's worker processes (where the code
    measured has them: since 2026-12-07 the shadow computes in processes of its own)."""
    workers = getattr(state.shadow, "worker_cpu_seconds", None)
    return time.process_time() + (workers() if workers is not None else 0.0)


async def run(asgi: Asgi, n: int, concurrency: int, body: bytes, content_type: str) -> dict[str, float]:
    """n requests from `concurrency` coroutines; CPU and wall per request until the shadow is idle."""

    async def client(count: int) -> None:
        for _ in range(count):
            status = await asgi.post("/predict", body, content_type)
            if status != 200:
                raise RuntimeError(f"/predict answered {status}")

    shares = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
    cpu, wall = cpu_now(asgi.state), time.perf_counter()
    await asyncio.gather(*(client(s) for s in shares))
    answered = time.perf_counter() - wall
    await asyncio.to_thread(asgi.state.shadow.wait_idle, 60.0)
    cpu, wall = cpu_now(asgi.state) - cpu, time.perf_counter() - wall
    return {
        "cpu_us_per_request": round(1e6 * cpu / n, 2),
        "answered_us_per_request": round(1e6 * answered / n, 2),  # wall, until the last answer
        "wall_us_per_request": round(1e6 * wall / n, 2),  # wall, until the shadow is idle too
    }


async def run_routing(asgi: Asgi, n: int, rows: np.ndarray) -> dict[str, float]:
    """n requests' routing alone (`--part routing`): choose the version, count the answer, queue the
    shadow's work, as /predict does around its own work; CPU per request until the shadow is idle."""
    from service.experiment import Routed  # the code measured, be it before or after a change

    state = asgi.state
    routing = state.models.routing
    current = state.model_for(None)
    probabilities = current.answer(rows).probabilities
    request = Request({"type": "http", "headers": [], "client": ("127.0.0.1", 40000)})
    with_response = "response" in inspect.signature(Routed.finish).parameters  # the code before 2026-12
    cpu, wall = cpu_now(state), time.perf_counter()
    for i in range(n if routing is not None else 0):
        if i % SHADOW_CHUNK == SHADOW_CHUNK - 1:  # no faster than a shadow computes: nothing dropped
            await asyncio.to_thread(state.shadow.wait_idle, 60.0)
        routed = Routed.start(routing, current, request)  # type: ignore[arg-type]
        if with_response:
            response = Response()
            routed.finish(state, request, rows, probabilities, response)  # type: ignore[call-arg]
            if response.background is not None:  # its shadow's submit, once the answer was sent
                await response.background()
        else:
            routed.finish(state, request, rows, probabilities)
    answered = time.perf_counter() - wall
    await asyncio.to_thread(state.shadow.wait_idle, 60.0)
    cpu, wall = cpu_now(state) - cpu, time.perf_counter() - wall
    return {
        "cpu_us_per_request": round(1e6 * cpu / n, 2),
        "answered_us_per_request": round(1e6 * answered / n, 2),
        "wall_us_per_request": round(1e6 * wall / n, 2),
    }


def figures(state: AppState) -> dict[str, Any]:
    live = state.experiment.tally.summary()
    return {} if live is None else {f"{v['version']} {v['role']}": v for v in live["versions"]}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    names = [m for m in args.modes.split(",") if m]
    levels = [int(c) for c in args.concurrency.split(",")]
    images, _ = common.load_mnist_test()
    body, content_type = common.multipart([("digit.png", common.encode_png(images[args.image]), "image/png")])
    scratch = Path(tempfile.mkdtemp(prefix="policy-cpu-"))
    apps: dict[str, Asgi] = {}
    try:
        for name in names:
            models = scratch / f"models-{name}"
            shutil.copytree(args.models_dir, models, ignore=shutil.ignore_patterns("policy", ".lock"))
            settings = Settings(models_dir=models, state_dir=scratch / f"state-{name}", token=common.TOKEN)
            apps[name] = asgi = Asgi(create_app(settings))
            await asgi.start()
            if (mode := MODES[name]) is not None:
                current = asgi.state.models.current
                assert current is not None
                others = sorted(v for v in asgi.state.registry.versions() if v != current.version)
                policy = Policy(mode[0], others[-1], mode[1], utc_now(), "bench")
                await asyncio.to_thread(asgi.state.models.start_policy, policy)
            await run(asgi, 500, 8, body, content_type)  # warm up
        runs: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = [(c, name) for c in levels for name in names]
            for c, name in order if r % 2 == 0 else order[::-1]:
                if args.part == "routing":
                    result = await run_routing(apps[name], args.requests, images[args.image : args.image + 1])
                else:
                    result = await run(apps[name], args.requests, c, body, content_type)
                runs.append({"round": r, "mode": name, "concurrency": c, **result})
                print(f"round {r} c={c:<3} {name:<7} {result}", file=sys.stderr)
        profiles = {}
        if args.profile:
            for name in names:
                profiler = cProfile.Profile()
                profiler.enable()
                await run(apps[name], args.requests, levels[0], body, content_type)
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
                profiles[name] = out.getvalue()
                print(f"\n== {name} (c={levels[0]}) ==\n{profiles[name]}", file=sys.stderr)
        live = {name: figures(asgi.state) for name, asgi in apps.items()}
    finally:
        for asgi in apps.values():
            await asgi.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"runs": runs, "summary": summarise(runs, levels, names), "live": live}


def summarise(runs: list[dict[str, Any]], levels: list[int], names: list[str]) -> list[dict[str, Any]]:
    """Per (concurrency, mode): the fewest and the median CPU µs per request over rounds (the fewest
    is the least disturbed by other programs on the machine), and what each adds to `none`'s."""
    rows = []
    for c in levels:
        base: dict[str, float] = {}
        for name in names:
            mine = [r["cpu_us_per_request"] for r in runs if r["mode"] == name and r["concurrency"] == c]
            fewest, median = min(mine), statistics.median(mine)
            if not base:
                base = {"min": fewest, "median": median}
            rows.append(
                {
                    "concurrency": c,
                    "mode": name,
                    "cpu_us_min": round(fewest, 1),
                    "cpu_us_median": round(median, 1),
                    "added_us_min": round(fewest - base["min"], 1),
                    "added_us_median": round(median - base["median"], 1),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_models_dir(args.models_dir)
    with threadpool_limits(limits=1, user_api="blas"):  # as a serving process (service.serve)
        result = uvloop.run(main_async(args))
    payload = {
        "benchmark": "policy_cpu",
        "machine": common.machine(),
        "settings": {
            "requests": args.requests,
            "rounds": args.rounds,
            "modes": args.modes,
            "part": args.part,
        },
        **result,
    }
    path = common.write_json("policy_cpu", payload, args.out)
    first = result["summary"][0]["mode"]
    print(f"| conc. | mode | CPU µs/request, min | median | added to {first}, min | median |")
    print("|---|---|---|---|---|---|")
    for row in result["summary"]:
        print(
            f"| {row['concurrency']} | {row['mode']} | {row['cpu_us_min']} | {row['cpu_us_median']} | "
            f"{row['added_us_min']:+} | {row['added_us_median']:+} |"
        )
    print(f"\nwritten to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
