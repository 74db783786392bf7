"""Promote another model version while /predict is under load: no request may fail.

    .venv/bin/python bench/promote_under_load.py --models-dir /tmp/bench-models
    .venv/bin/python bench/promote_under_load.py --workers 2 --via registry --duration 20

The registry is copied to a temporary folder first (the run moves its `current` pointer), and a
service is started on the copy. A registry with one version only (the shipped baseline) gets a
copy of that version published as a second one, in the copy: same weights, another name.
An async httpx client keeps `--concurrency` /predict requests in flight (one MNIST digit as a
PNG each) for `--duration` seconds; half way, another version is promoted, either through the
API (`POST /models/{version}/promote` with the token: the worker that answers switches at once,
any others within `MNIST_RELOAD_INTERVAL_S`) or straight in the registry (`--via registry`, as
`python -m trainer promote` does: every worker notices the pointer by itself). Every answer is
recorded with its time, status and the version that gave it.

Pass: zero answers other than 200 and zero transport errors, answers from the new version after
the promotion, and none from the old one once the switch is complete (with several workers each
switches on its own, so old and new may interleave for up to a reload interval).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _serve_common as common
import httpx

from registry import Registry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--to", help="version to promote (default: the newest one that is not current)")
    parser.add_argument("--via", choices=("api", "registry"), default="api")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/promote_under_load-<time>.json)"
    )
    return parser.parse_args(argv)


async def load(
    url: str, body: bytes, content_type: str, duration: float, concurrency: int, promote: Any
) -> tuple[list[tuple[float, int, str | None]], list[str], dict[str, Any]]:
    """(seconds since start, status, version) of every answer; transport errors; the promotion."""
    answers: list[tuple[float, int, str | None]] = []
    errors: list[str] = []
    promotion: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        started = time.perf_counter()

        async def user() -> None:
            while time.perf_counter() - started < duration:
                try:
                    r = await client.post("/predict", content=body, headers={"Content-Type": content_type})
                except httpx.HTTPError as exc:
                    errors.append(f"{time.perf_counter() - started:.3f}s {type(exc).__name__}: {exc}")
                    continue
                version = r.json().get("version") if r.status_code == 200 else None
                answers.append((time.perf_counter() - started, r.status_code, version))

        async def promoter() -> None:
            await asyncio.sleep(duration / 2)
            promotion["at_s"] = time.perf_counter() - started
            promotion.update(await promote(client))
            promotion["done_s"] = time.perf_counter() - started

        await asyncio.gather(promoter(), *(user() for _ in range(concurrency)))
    return answers, errors, promotion


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_models_dir(args.models_dir)
    scratch = Path(tempfile.mkdtemp(prefix="promote-under-load-"))
    models = scratch / "models"
    shutil.copytree(args.models_dir / "mnist", models / "mnist")  # the run moves the pointer
    registry = Registry(models, "mnist")
    old = registry.current()
    target = args.to or next((v for v in sorted(registry.versions(), reverse=True) if v != old), None)
    if target is None:  # one version only (the shipped baseline): publish a copy of it as another
        net, manifest = registry.load(old)
        keep = ("test_accuracy", "preset", "dataset", "hyperparameters")
        target = registry.publish(net, {**{k: manifest[k] for k in keep if k in manifest}, "copy_of": old})
        print(
            f"{args.models_dir} has {old} only: published a copy of it as {target} (in the copy)",
            file=sys.stderr,
        )
    if target == old:
        sys.exit(f"--to {target} is already current")

    images, _ = common.load_mnist_test()
    body, content_type = common.multipart([("digit.png", common.encode_png(images[0]), "image/png")])

    async def promote(client: httpx.AsyncClient) -> dict[str, Any]:
        if args.via == "registry":
            previous, current = await asyncio.to_thread(registry.promote, target)
            return {"via": "registry", "previous": previous, "current": current}
        r = await client.post(
            f"/models/{target}/promote", headers={"Authorization": f"Bearer {common.TOKEN}"}
        )
        return {"via": "api", "status": r.status_code, "answer": r.json()}

    server = common.service_server(
        "service", models, scratch / "state", workers=args.workers, extra_env={"MNIST_LOG_LEVEL": "warning"}
    )
    print(
        f"serving {old}; promoting {target} via {args.via} after {args.duration / 2:.1f} s", file=sys.stderr
    )
    with common.running([server], scratch):
        answers, errors, promotion = asyncio.run(
            load(server.url, body, content_type, args.duration, args.concurrency, promote)
        )
        log_tail = server.log_tail(10)
    shutil.rmtree(scratch, ignore_errors=True)

    statuses = Counter(status for _, status, _ in answers)
    non_200 = sum(n for status, n in statuses.items() if status != 200)
    before = Counter(v for t, s, v in answers if s == 200 and t < promotion["at_s"])
    after = Counter(v for t, s, v in answers if s == 200 and t >= promotion["at_s"])
    first_new = min((t for t, s, v in answers if v == target), default=None)
    last_old = max((t for t, s, v in answers if v == old), default=None)
    switched = first_new is not None and after[target] > 0
    # once the last old answer is out, every answer comes from the new version
    clean_after = all(
        v == target for t, s, v in answers if s == 200 and last_old is not None and t > last_old
    )
    passed = non_200 == 0 and not errors and switched and clean_after and promotion.get("status", 200) == 200
    payload = {
        "benchmark": "promote_under_load",
        "machine": common.machine(),
        "settings": {
            "models_dir": str(args.models_dir),
            "workers": args.workers,
            "via": args.via,
            "duration_s": args.duration,
            "concurrency": args.concurrency,
        },
        "from_version": old,
        "to_version": target,
        "promotion": promotion,
        "requests": len(answers),
        "statuses": {str(k): v for k, v in statuses.items()},
        "non_200": non_200,
        "transport_errors": errors[:20],
        "versions_before_promotion": dict(before),
        "versions_after_promotion": dict(after),
        "first_new_answer_s": first_new,
        "last_old_answer_s": last_old,
        "switch_window_ms": None
        if first_new is None or last_old is None
        else round(max(0.0, last_old - promotion["at_s"]) * 1000, 1),
        "passed": passed,
        "server_log_tail": log_tail,
    }
    path = common.write_json("promote_under_load", payload, args.out)
    print(
        json.dumps({k: payload[k] for k in list(payload)[2:-1] if k != "transport_errors"}, indent=2)
        + f"\ntransport errors: {len(errors)}\n{'PASS' if passed else 'FAIL'}\nwritten to {path}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
