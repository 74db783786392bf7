"""Serving under abuse (issue 11, items 7 and 8): probes while the largest request decodes; memory under load.

    .venv/bin/python bench/abuse.py                                   # this checkout
    .venv/bin/python bench/abuse.py --checkout before=/path/to/other  # and another commit's, same runs
    .venv/bin/python bench/abuse.py --rounds 5 --concurrency 8,64

Two measurements, each on a fresh `python -m service` (one worker, default settings, the registry in
`models/` unless `--models-dir`) per checkout:

- **Probes while decoding.** A client posts the largest request the default limits accept (two
  4000x4000 RGBA PNGs of a drawn stroke: 32 megapixels, the per-request pixel budget) and, while it
  is in flight, another asks `/livez` every 10 ms, and a third posts a 28x28 digit. Per round: the
  slowest and median `/livez`, the slowest small `/predict`, and how long the big request took. Also
  the issue's request (16 such images, 256 megapixels), legal before the budget.
- **Memory under maximal uploads.** N clients at once, each posting a maximal /predict body (eight
  noise RGBA PNGs of ~4.9 MB, 1.2 megapixels each: 39 MB, the body cap), twice each. Peak resident
  memory (VmHWM from /proc) before and after, the statuses, the wall time.

Results go to bench/results/abuse-<time>.json; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _serve_common as common
import httpx
import numpy as np
from PIL import Image, ImageDraw


def stroke_png(side: int = 4000) -> bytes:
    image = Image.new("RGBA", (side, side), "white")
    ImageDraw.Draw(image).line(
        [(side // 2, side // 8), (side // 2, side * 7 // 8)], fill="black", width=side // 12
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def noise_png(seed: int, side: int = 1100) -> bytes:
    """~4.9 MB of RGBA noise (incompressible): a maximal file under the 5 MiB cap."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probes_while(url: str, body: bytes, content_type: str, small: tuple[bytes, str]) -> dict[str, Any]:
    """Post `body` to /predict in a thread; meanwhile time /livez and a small /predict."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def big() -> None:
        started = time.perf_counter()
        try:
            response = httpx.post(
                url + "/predict", content=body, headers={"Content-Type": content_type}, timeout=120
            )
            outcome["status"] = response.status_code
        finally:
            outcome["seconds"] = time.perf_counter() - started
            done.set()

    thread = threading.Thread(target=big)
    livez, predict = [], []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/livez")  # the connection is open before the big request starts
        thread.start()
        time.sleep(0.02)  # the big request's first bytes are on their way
        while not done.is_set():
            started = time.perf_counter()
            client.get("/livez")
            livez.append(time.perf_counter() - started)
            if len(livez) % 5 == 0:
                started = time.perf_counter()
                client.post("/predict", content=small[0], headers={"Content-Type": small[1]})
                predict.append(time.perf_counter() - started)
            done.wait(0.01)
    thread.join()
    return {
        "big_status": outcome.get("status"),
        "big_seconds": round(outcome["seconds"], 3),
        "livez_n": len(livez),
        "livez_max_ms": round(max(livez) * 1000, 1) if livez else None,
        "livez_median_ms": round(statistics.median(livez) * 1000, 2) if livez else None,
        "small_predict_max_ms": round(max(predict) * 1000, 1) if predict else None,
    }


def memory_under(url: str, pid: int, body: bytes, content_type: str, clients: int) -> dict[str, Any]:
    before = peak_rss_mib(pid)

    def upload(_: int) -> int:
        try:
            return httpx.post(
                url + "/predict", content=body, headers={"Content-Type": content_type}, timeout=300
            ).status_code
        except httpx.HTTPError as exc:
            return -1 if not isinstance(exc, httpx.TimeoutException) else -2

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = Counter(pool.map(upload, range(2 * clients)))
    return {
        "clients": clients,
        "requests": 2 * clients,
        "body_mb": round(len(body) / 1e6, 1),
        "peak_rss_before_mib": round(before),
        "peak_rss_after_mib": round(peak_rss_mib(pid)),
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", default="8,64", help="clients at once for the memory runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    checkouts = [("this", common.ROOT)] + [
        (name, Path(path).resolve()) for name, _, path in (c.partition("=") for c in args.checkout)
    ]

    page = stroke_png()
    largest, largest_type = common.multipart([(f"page{i}.png", page, "image/png") for i in range(2)])
    issue, issue_type = common.multipart([(f"page{i}.png", page, "image/png") for i in range(16)])
    small = common.multipart([("digit.png", common.encode_png(common.load_mnist_test()[0][0]), "image/png")])
    maximal, maximal_type = common.multipart([(f"noise{i}.png", noise_png(i), "image/png") for i in range(8)])
    scratch = Path(tempfile.mkdtemp(prefix="abuse-"))
    results: dict[str, Any] = {"benchmark": "abuse", "machine": common.machine(), "runs": []}
    print(f"load average before: {results['machine']['load_average']}", file=sys.stderr)

    def with_server(name: str, path: Path, tag: str, work: Callable[[common.Server], dict[str, Any]]) -> None:
        server = common.service_server(
            f"{name}-{tag}", args.models_dir, scratch / f"state-{name}-{tag}", checkout=path
        )
        with common.running([server], scratch):
            assert server.process is not None
            row = {"checkout": name, "measure": tag, **work(server)}
            row.setdefault("peak_rss_after_mib", round(peak_rss_mib(server.process.pid)))
        results["runs"].append(row)
        print(json.dumps(row), file=sys.stderr)

    for name, path in checkouts:
        for r in range(args.rounds):
            for tag, body, ctype in (("largest", largest, largest_type), ("issue16", issue, issue_type)):
                with_server(
                    name, path, f"{tag}-{r}", lambda s, b=body, c=ctype: probes_while(s.url, b, c, small)
                )
        for clients in [int(c) for c in args.concurrency.split(",")]:
            with_server(
                name,
                path,
                f"memory-{clients}",
                lambda s, n=clients: memory_under(s.url, s.process.pid, maximal, maximal_type, n),  # type: ignore[union-attr]
            )
    results["load_average_after"] = common.load_average()
    out = args.out or common.RESULTS / f"abuse-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
