"""Promote on one replica of a cluster: how long until every worker of every replica answers with it.

    .venv/bin/python bench/cluster_promote.py                       # 20 promotes, 2 replicas x 2 workers
    .venv/bin/python bench/cluster_promote.py --promotes 40 --concurrency 16

A throwaway cluster on this machine: a fresh database on the local PostgreSQL (127.0.0.1:5432, else a
throwaway server from the installed binaries), a moto S3 server for the registry, and two replicas
(`python -m service`, `--workers` uvicorn workers each) with the pointer in PostgreSQL and the
default pointer watch (MNIST_RELOAD_INTERVAL_S=1). The shipped model is published twice (same
weights, two versions). An async client keeps `--concurrency` /predict requests in flight, spread
over both replicas, all run long; the promotes alternate between the replicas and between the two
versions, `--gap` seconds apart.

A promote's switch time: from the moment the promote request was sent to the start of the last
request (on either replica) that still got the old version; every request started later got the
new one (checked). With requests in flight on every worker all the time, that is the time until
every worker of both replicas served the new version. Target (issue 15): p100 <= 2 s over 20
promotes, zero failed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _serve_common as common
import httpx

sys.path.insert(0, str(common.ROOT))
from registry import Registry, open_registry
from tests.realservers import fresh_database, moto_server, new_bucket, postgres_server, s3_environment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models-dir", type=Path, default=common.ROOT / "models", help="where the model comes from"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per replica")
    parser.add_argument("--promotes", type=int, default=20)
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between promotes")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight, over both replicas")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/cluster_promote-<time>.json)"
    )
    return parser.parse_args(argv)


async def run_load(
    urls: list[str], body: bytes, content_type: str, args: argparse.Namespace, versions: list[str]
) -> tuple[list[tuple[float, float, int, int, str | None]], list[str], list[dict[str, Any]]]:
    """Answers (start, end, replica, status, version), transport errors, and the promotes."""
    answers: list[tuple[float, float, int, int, str | None]] = []
    errors: list[str] = []
    promotes: list[dict[str, Any]] = []
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
    started = time.perf_counter()
    done = asyncio.Event()  # set a gap after the last promote: the load covers every switch
    try:

        async def user(i: int) -> None:
            replica = i % len(clients)
            while not done.is_set():
                t0 = time.perf_counter() - started
                try:
                    r = await clients[replica].post(
                        "/predict", content=body, headers={"Content-Type": content_type}
                    )
                except httpx.HTTPError as exc:
                    errors.append(f"{t0:.3f}s replica {replica}: {type(exc).__name__}: {exc}")
                    continue
                version = r.json().get("version") if r.status_code == 200 else None
                answers.append((t0, time.perf_counter() - started, replica, r.status_code, version))

        async def promoter() -> None:
            for n in range(args.promotes):
                await asyncio.sleep(args.gap)
                replica, target = n % len(clients), versions[(n + 1) % 2]
                at = time.perf_counter() - started
                r = await clients[replica].post(
                    f"/models/{target}/promote", headers={"Authorization": f"Bearer {common.TOKEN}"}
                )
                promotes.append(
                    {"at_s": at, "answered_s": time.perf_counter() - started - at, "replica": replica,
                     "to": target, "status": r.status_code}
                )  # fmt: skip
            await asyncio.sleep(args.gap)
            done.set()

        await asyncio.gather(promoter(), *(user(i) for i in range(args.concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return answers, errors, promotes


def switch_times(answers: list, promotes: list[dict[str, Any]]) -> list[float | None]:
    """Per promote: seconds from sending it to the start of the last old-version request."""
    times: list[float | None] = []
    for i, p in enumerate(promotes):
        end = promotes[i + 1]["at_s"] if i + 1 < len(promotes) else float("inf")
        window = [a for a in answers if p["at_s"] <= a[0] < end and a[3] == 200]
        old = [a[0] for a in window if a[4] != p["to"]]
        last_old = max(old, default=p["at_s"])
        clean = all(a[4] == p["to"] for a in window if a[0] > last_old)
        new_seen = any(a[4] == p["to"] for a in window)
        times.append(last_old - p["at_s"] if clean and new_seen else None)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_models_dir(args.models_dir)
    shipped = Registry(args.models_dir, "mnist")
    net, manifest = shipped.load(None)
    images, _ = common.load_mnist_test()
    body, content_type = common.multipart([("digit.png", common.encode_png(images[0]), "image/png")])
    scratch = Path(tempfile.mkdtemp(prefix="cluster-promote-"))
    with postgres_server() as admin, fresh_database(admin) as database_url, moto_server() as endpoint:
        s3 = s3_environment(endpoint)
        os.environ.update(s3)
        url = f"s3://{new_bucket(endpoint)}/bench"
        registry = open_registry(url, database_url=database_url)
        keep = {k: manifest[k] for k in ("test_accuracy", "dataset", "digit_score") if k in manifest}
        versions = [registry.publish(net, {**keep, "copy": n}) for n in range(2)]
        registry.promote(versions[0])
        env = {**s3, "MNIST_REGISTRY_URL": url, "MNIST_DATABASE_URL": database_url}
        servers = [
            common.service_server(f"replica-{n}", scratch / "unused", scratch / f"state-{n}",
                                  workers=args.workers, extra_env=env)
            for n in range(2)
        ]  # fmt: skip
        load_before = common.load_average()
        with common.running(servers, scratch):
            answers, errors, promotes = asyncio.run(
                run_load([s.url for s in servers], body, content_type, args, versions)
            )
        load_after = common.load_average()
    times = switch_times(answers, promotes)
    measured = sorted(t for t in times if t is not None)
    failed = sum(1 for a in answers if a[3] != 200) + len(errors)
    summary = {
        "promotes": len(promotes),
        "promote_answers": sorted({p["status"] for p in promotes}),
        "switch_s_p50": measured[len(measured) // 2] if measured else None,
        "switch_s_p100": measured[-1] if measured else None,
        "unmeasured": sum(1 for t in times if t is None),
        "requests": len(answers),
        "failed_requests": failed,
        "errors": errors[:5],
    }
    payload = {
        "benchmark": "cluster_promote",
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": common.machine(),
        "load_average": {"before": load_before, "after": load_after},
        "summary": summary,
        "switch_s": times,
        "promote_list": promotes,
    }
    path = common.write_json("cluster_promote", payload, args.out)
    print(
        f"{summary['promotes']} promotes over 2 replicas x {args.workers} workers, {summary['requests']} "
        f"requests ({args.concurrency} in flight): switch p50 {summary['switch_s_p50']:.3f} s, "
        f"p100 {summary['switch_s_p100']:.3f} s, {summary['unmeasured']} unmeasured; "
        f"{failed} failed requests -> {path}"
    )
    ok = failed == 0 and summary["unmeasured"] == 0 and (summary["switch_s_p100"] or 99) <= 2.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
