"""Requests/s and latency of `POST /predict` under wrk, beside a no-op FastAPI endpoint, same run.

    .venv/bin/python bench/serve_load.py --models-dir /tmp/bench-models
    .venv/bin/python bench/serve_load.py --workers 1 --concurrency 1,8,64 --rounds 5 --duration 5
    .venv/bin/python bench/serve_load.py --variant nobatch=MNIST_PREDICT_BATCHING=false   # another config
    .venv/bin/python bench/serve_load.py --variant nopng=MNIST_FAST_PATHS=-png            # a fast path off
    .venv/bin/python bench/serve_load.py --workers 1 --checkout main=../main              # another commit

Servers: the service (`python -m service`, access log off) and `bench/noop_app.py` (FastAPI
`UploadFile`, fixed JSON answer), both under uvicorn with uvloop and httptools, for each worker
count asked for. Load: wrk (one thread, `-c` connections, keep-alive) posting one 28x28 MNIST test
digit as a PNG in a multipart body, the same bytes to every server.

CPUs: with one worker the servers are pinned to CPU 0 and wrk to CPU 1 (`taskset`), so the load
generator does not take the server's core; with two workers the servers may use both CPUs and
wrk runs unpinned beside them (it needs CPU time too, so 2x is the ceiling, not the expectation).

Run length: wrk opens all its connections at once, and a server that is already busy accepts one
new connection per turn of its event loop (uvloop), so at 64 connections the last ones to be
accepted wait ~20 turns for their first answer. In a 3 s run those first requests are 1 % of all
and they alone set p99; runs of 10 s (the default) measure the steady state instead.

Interleaving: every round runs every (concurrency, server) pair once, in an order that reverses
every round, so load from other work on the machine hits all servers alike; figures are medians
over rounds, and each round's predict/no-op ratio is taken from runs seconds apart. The load
average is recorded before and after.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

import _serve_common as common
from _wrk import Wrk


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, e.g. 1 or 1,2")
    parser.add_argument("--concurrency", default="1,8,64", help="wrk connections, e.g. 1,8,64")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats of every run")
    parser.add_argument("--image", type=int, default=0, help="which t10k digit to post")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=ENV=VALUE[,ENV=VALUE]",
        help="also measure the service with these extra environment variables (repeatable)",
    )
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also measure the service of another checkout (a git worktree of another commit), same settings",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the 1-worker runs with taskset")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/serve_load-<time>.json)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_models_dir(args.models_dir)
    workers = [int(w) for w in args.workers.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    variants = [("predict", {})] + [common.parse_variant(v) for v in args.variant]
    checkouts = [(name, Path(path).resolve()) for name, _, path in (c.partition("=") for c in args.checkout)]

    images, _ = common.load_mnist_test()
    png = common.encode_png(images[args.image])
    body, content_type = common.multipart([("digit.png", png, "image/png")])

    scratch = Path(tempfile.mkdtemp(prefix="serve-load-"))
    servers: list[common.Server] = []
    for w in workers:
        cpus = None if (w > 1 or args.no_pin) else "0"
        servers.append(common.noop_server(f"noop-{w}w", workers=w, cpus=cpus))
        for name, env in variants:
            servers.append(
                common.service_server(
                    f"{name}-{w}w",
                    args.models_dir,
                    scratch / f"state-{name}-{w}w",
                    workers=w,
                    cpus=cpus,
                    extra_env=env,
                )
            )
        for name, path in checkouts:
            servers.append(
                common.service_server(
                    f"{name}-{w}w",
                    args.models_dir,
                    scratch / f"state-{name}-{w}w",
                    workers=w,
                    cpus=cpus,
                    checkout=path,
                )
            )
    before = common.machine()
    print(f"load average before: {before['load_average']}", file=sys.stderr)
    runs: list[dict[str, Any]] = []
    with common.running(servers, scratch):
        wrk = {w: Wrk(body, content_type, cpus=None if (w > 1 or args.no_pin) else "1") for w in workers}
        try:
            for server in servers:  # answers correctly, then warm up (first-call costs, TCP, caches)
                status, answer = common.http_post(
                    server.url + "/predict", body, {"Content-Type": content_type}
                )
                if status != 200:
                    raise RuntimeError(f"{server.name}: /predict answered {status}: {answer[:300]!r}")
                wrk[server.workers].run(server.url + "/predict", 8, 1.0)
            pairs = [(c, s) for c in levels for s in servers]
            for r in range(args.rounds):
                order = pairs if r % 2 == 0 else pairs[::-1]
                for c, server in order:
                    cpu_before = server.cpu_seconds()
                    res = wrk[server.workers].run(server.url + "/predict", c, args.duration)
                    cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(res.requests, 1)
                    runs.append(
                        {
                            "round": r,
                            "server": server.name,
                            "workers": server.workers,
                            "concurrency": c,
                            "rps": round(res.rps, 1),
                            "p50_ms": res.p50_ms,
                            "p90_ms": res.p90_ms,
                            "p99_ms": res.p99_ms,
                            "mean_ms": round(res.mean_ms, 3),
                            "max_ms": res.max_ms,
                            "requests": res.requests,
                            "server_cpu_ms_per_request": round(cpu_ms, 3),
                            "errors": res.errors,
                            "load_average": common.load_average(),
                        }
                    )
                    print(
                        f"round {r} c={c:<3} {server.name:<14} {res.rps:8.0f} req/s  "
                        f"p50 {res.p50_ms:6.2f}  p99 {res.p99_ms:6.2f} ms  cpu/req {cpu_ms:5.2f} ms  "
                        f"errors {res.failed}",
                        file=sys.stderr,
                    )
        finally:
            for w in wrk.values():
                w.close()
    names = [name for name, _ in variants] + [name for name, _ in checkouts]
    summary = summarise(runs, workers, levels, names)
    after = common.load_average()
    payload = {
        "benchmark": "serve_load",
        "machine": before,
        "load_average_after": after,
        "settings": {
            "models_dir": str(args.models_dir),
            "workers": workers,
            "concurrency": levels,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "image_bytes": len(png),
            "body_bytes": len(body),
            "pinned": not args.no_pin,
            "variants": dict(variants),
        },
        "summary": summary,
        "runs": runs,
    }
    path = common.write_json("serve_load", payload, args.out)
    print(table(summary, before["load_average"], after))
    print(f"\nwritten to {path}")
    return 0


def summarise(
    runs: list[dict[str, Any]], workers: list[int], levels: list[int], variants: list[str]
) -> list[dict[str, Any]]:
    """Per (workers, concurrency, variant): medians, and the ratios to the no-op of the same round."""
    rows = []
    for w, c, name in itertools.product(workers, levels, variants):

        def pick(server: str, w: int = w, c: int = c) -> dict[int, dict[str, Any]]:
            return {
                run["round"]: run
                for run in runs
                if run["server"] == server and run["workers"] == w and run["concurrency"] == c
            }

        noop, mine = pick(f"noop-{w}w"), pick(f"{name}-{w}w")
        rounds = sorted(set(noop) & set(mine))
        row = {
            "workers": w,
            "concurrency": c,
            "variant": name,
            "noop_rps": common.median([noop[r]["rps"] for r in rounds]),
            "rps": common.median([mine[r]["rps"] for r in rounds]),
            "noop_p99_ms": common.median([noop[r]["p99_ms"] for r in rounds]),
            "p99_ms": common.median([mine[r]["p99_ms"] for r in rounds]),
            "noop_p50_ms": common.median([noop[r]["p50_ms"] for r in rounds]),
            "p50_ms": common.median([mine[r]["p50_ms"] for r in rounds]),
            "rps_ratio": common.median([mine[r]["rps"] / noop[r]["rps"] for r in rounds]),
            # p99 of the median run each: one burst of host noise in either run of a round would
            # otherwise decide that round's ratio
            "p99_ratio": common.median([mine[r]["p99_ms"] for r in rounds])
            / common.median([noop[r]["p99_ms"] for r in rounds]),
            "p99_ratio_per_round": common.median([mine[r]["p99_ms"] / noop[r]["p99_ms"] for r in rounds]),
            "noop_cpu_ms": common.median([noop[r]["server_cpu_ms_per_request"] for r in rounds]),
            "cpu_ms": common.median([mine[r]["server_cpu_ms_per_request"] for r in rounds]),
            "failed": sum(sum(mine[r]["errors"].values()) + sum(noop[r]["errors"].values()) for r in rounds),
            "rounds": len(rounds),
        }
        one = [x for x in rows if x["workers"] == 1 and x["concurrency"] == c and x["variant"] == name]
        if w > 1 and one:
            row["rps_vs_1_worker"] = row["rps"] / one[0]["rps"]
            row["noop_rps_vs_1_worker"] = row["noop_rps"] / one[0]["noop_rps"]
        rows.append(row)
    return rows


def table(summary: list[dict[str, Any]], load_before: list[float], load_after: list[float]) -> str:
    lines = [
        f"load average before {load_before}, after {load_after}",
        "",
        "| workers | conc. | server | no-op req/s | req/s | ratio | no-op p99 ms | p99 ms | p99 ratio "
        "| no-op CPU ms/req | CPU ms/req | vs 1 worker | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        scale = row.get("rps_vs_1_worker")
        versus = "" if scale is None else f"{scale:.2f}x (no-op {row['noop_rps_vs_1_worker']:.2f}x)"
        lines.append(
            f"| {row['workers']} | {row['concurrency']} | {row['variant']} | {row['noop_rps']:.0f} "
            f"| {row['rps']:.0f} | {row['rps_ratio']:.2f}x | {row['noop_p99_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {row['p99_ratio']:.2f}x "
            f"| {row['noop_cpu_ms']:.2f} | {row['cpu_ms']:.2f} "
            f"| {versus} "
            f"| {row['failed']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
