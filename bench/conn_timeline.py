"""When does each of 64 connections get its first answer? The start of a c=64 run, request by request.

    .venv/bin/python bench/conn_timeline.py                                  # this checkout, 8 trials
    .venv/bin/python bench/conn_timeline.py --checkout before=PATH --trials 8 --path /v2/models/mnist/infer

wrk reports one latency distribution per run; a p99 far above p90 can be a steady tail or a burst
at the start. This opens all connections at once (as wrk does), sends the same request back to back
on each for a few seconds (asyncio, raw HTTP/1.1 keep-alive), and reports when each connection got
its first answer and the latency in the first 250 ms against the rest. The server is pinned to CPU 0,
the client to CPU 1; every trial is a fresh burst of connections to the same warmed-up server.
Body: one MNIST test digit as V2 JSON (FP32), or as a PNG for `--path /predict`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _serve_common as common
from oip_peers import post, v2_json


async def burst(port: int, request: bytes, connections: int, seconds: float) -> dict[str, float]:
    records: list[tuple[float, float]] = []  # (started, latency), seconds from the burst's start
    firsts: list[float] = []

    async def connection(t0: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        first = True
        while time.perf_counter() - t0 < seconds:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            done = time.perf_counter()
            records.append((started - t0, done - started))
            if first:
                firsts.append(done - t0)
                first = False
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection(t0) for _ in range(connections)))
    early = sorted(lat for start, lat in records if start < 0.25)
    late = sorted(lat for start, lat in records if start >= 0.25)
    every = sorted(lat for _, lat in records)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    return {
        "first_answer_median_s": statistics.median(firsts),
        "first_answer_max_s": max(firsts),
        "p90_ms": pct(every, 0.90),
        "p99_ms": pct(every, 0.99),
        "first_250ms_max_ms": early[-1] * 1000 if early else float("nan"),
        "after_250ms_p99_ms": pct(late, 0.99),
        "requests": len(records),
    }


def client_main(argv: list[str]) -> None:
    """The client half, run pinned to its own CPU: prints each trial's figures as JSON lines."""
    port, body_file, path, content_type = int(argv[0]), argv[1], argv[2], argv[3]
    connections, seconds, trials = int(argv[4]), float(argv[5]), int(argv[6])
    body = Path(body_file).read_bytes()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    for _ in range(trials):
        print(json.dumps(asyncio.run(burst(port, request, connections, seconds))), flush=True)
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--path", default="/v2/models/mnist/infer")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    args = parser.parse_args(argv)
    images, _ = common.load_mnist_test()
    png = args.path == "/predict"
    body, content_type = (
        (common.encode_png(images[0]), "image/png") if png else (v2_json(images[:1]), "application/json")
    )
    work = Path(tempfile.mkdtemp(prefix="conn-timeline-"))
    (work / "body").write_bytes(body)
    checkouts = [("this", common.ROOT)] + [
        (n, Path(p).resolve()) for n, _, p in (c.partition("=") for c in args.checkout)
    ]
    print(f"# {args.trials} bursts of {args.connections} connections, {args.seconds} s each, {args.path}")
    print(f"# {common.machine()}")
    for name, checkout in checkouts:
        server = common.service_server(
            name, args.models_dir, work / f"state-{name}", cpus="0", checkout=checkout
        )
        with common.running([server], work):
            for _ in range(3):
                post(server.url + args.path, body, content_type, {})
            command = [
                *common.taskset("1"),
                sys.executable,
                __file__,
                "--client",
                str(server.port),
                str(work / "body"),
                args.path,
                content_type,
                str(args.connections),
                str(args.seconds),
                str(args.trials),
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        trials = [json.loads(line) for line in out.splitlines()]
        starved = sum(t["first_answer_max_s"] > 0.5 for t in trials)
        print(f"{name}: {starved} of {len(trials)} bursts left a connection > 0.5 s without its first answer")
        for t in trials:
            print(
                f"  first answer median {t['first_answer_median_s']:.3f} s, "
                f"max {t['first_answer_max_s']:.3f} s; p90 {t['p90_ms']:.0f} ms, p99 {t['p99_ms']:.0f} ms; "
                f"slowest in the first 250 ms {t['first_250ms_max_ms']:.0f} ms, "
                f"p99 after {t['after_250ms_p99_ms']:.0f} ms ({t['requests']} requests)"
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        sys.exit(main())
