"""Accuracy through HTTP: the 10,000 MNIST test digits posted to /predict, beside the offline figure.

    .venv/bin/python bench/http_accuracy.py --models-dir /tmp/bench-models
    .venv/bin/python bench/http_accuracy.py --limit 1000            # a quick look
    .venv/bin/python bench/http_accuracy.py --url http://127.0.0.1:8000  # a service already running

Offline: the version the service answers with, loaded from the registry and run on the raw test
pixels (what `python -m trainer evaluate` measures). Through HTTP, two renderings of each digit:

- `png`: the 28x28 digit as it is, a grayscale PNG. Preprocessing must give MNIST digits back
  unchanged, so the accuracy must match the offline one within 0.1 point (and the answers should
  agree image by image);
- `photo`: black ink on white, scaled to 280x280 (bicubic), saved as an RGB JPEG (quality 90), as a
  scan or a photo of a digit would arrive. The drop from the offline accuracy must be <= 1 point.

Requests carry `--batch` files each (multipart, one part per image), `--concurrency` at a time.
Every answer must name the version evaluated offline; any non-200 answer is counted and its images
are re-sent one by one so that each failure is attributed (a failed image counts as wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _serve_common as common
import httpx
import numpy as np

from registry import Registry

PNG_TARGET_POINTS = 0.1
PHOTO_TARGET_POINTS = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--url", help="a running service to ask (default: start one on a free port)")
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR)
    parser.add_argument("--limit", type=int, default=10_000, help="first N test digits")
    parser.add_argument("--batch", type=int, default=64, help="images per request (<= MNIST_MAX_FILES)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--variants", default="png,photo", help="png, photo or both")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/http_accuracy-<time>.json)"
    )
    return parser.parse_args(argv)


RENDER = {
    "png": (common.encode_png, "png", "image/png"),
    "photo": (common.encode_photo, "jpg", "image/jpeg"),
}


async def post_all(
    url: str, files: list[bytes], ext: str, mime: str, batch: int, concurrency: int
) -> tuple[list[int | None], set[str], int, float]:
    """Digits read for each image (None where refused), versions seen, non-200 count, seconds."""
    digits: list[int | None] = [None] * len(files)
    versions: set[str] = set()
    failures = 0
    limiter = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def send(indices: list[int]) -> int:
            parts = [("file", (f"{i}.{ext}", files[i], mime)) for i in indices]
            async with limiter:
                response = await client.post("/predict", files=parts)
            if response.status_code != 200:
                if len(indices) == 1:
                    print(
                        f"image {indices[0]}: {response.status_code} {response.text[:200]}", file=sys.stderr
                    )
                    return 1
                # find which image was refused: one request per image
                return 1 + sum(await asyncio.gather(*(send([i]) for i in indices)))
            body = response.json()
            versions.add(body["version"])
            for i, item in zip(indices, body["predictions"], strict=True):
                digits[i] = item["digit"]
            return 0

        started = time.perf_counter()
        chunks = [list(range(s, min(s + batch, len(files)))) for s in range(0, len(files), batch)]
        failures = sum(await asyncio.gather(*(send(c) for c in chunks)))
        seconds = time.perf_counter() - started
    return digits, versions, failures, seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images, labels = common.load_mnist_test(args.data_dir)
    images, labels = images[: args.limit], labels[: args.limit]
    variants = [v for v in args.variants.split(",") if v]

    scratch = Path(tempfile.mkdtemp(prefix="http-accuracy-"))
    servers = []
    if args.url is None:
        common.check_models_dir(args.models_dir)
        servers = [common.service_server("service", args.models_dir, scratch / "state")]
    with common.running(servers, scratch):
        url = args.url or servers[0].url
        status, ready = common.http_get(url + "/readyz")
        if status != 200:
            sys.exit(f"{url} is not ready: {status} {ready[:200]!r}")
        version = json.loads(ready)["version"]

        # Offline: the same version, on the raw pixels.
        models_dir = args.models_dir
        if args.url is not None and not (models_dir / "mnist" / f"{version}.npz").exists():
            sys.exit(f"--url given: pass the --models-dir the service at {url} serves")
        net, manifest = Registry(models_dir, "mnist").load(version)
        offline_pred = net.predict(images.reshape(len(images), -1))
        offline = float((offline_pred == labels).mean())
        print(f"{version}: offline accuracy {offline:.4f} on {len(labels)} digits", file=sys.stderr)

        results: dict[str, Any] = {}
        for variant in variants:
            render, ext, mime = RENDER[variant]
            started = time.perf_counter()
            files = [render(im) for im in images]
            encode_s = time.perf_counter() - started
            digits, versions, failures, seconds = asyncio.run(
                post_all(url, files, ext, mime, args.batch, args.concurrency)
            )
            got = np.array([-1 if d is None else d for d in digits])
            accuracy = float((got == labels).mean())
            drop = (offline - accuracy) * 100
            results[variant] = {
                "accuracy": accuracy,
                "drop_points": round(drop, 3),
                "agreement_with_offline": float((got == offline_pred).mean()),
                "refused_images": int((got == -1).sum()),
                "non_200_responses": failures,
                "versions_answering": sorted(versions),
                "mean_bytes_per_image": round(float(np.mean([len(f) for f in files])), 1),
                "encode_s": round(encode_s, 2),
                "http_s": round(seconds, 2),
                "images_per_s": round(len(files) / seconds, 1),
                "target_points": PNG_TARGET_POINTS if variant == "png" else PHOTO_TARGET_POINTS,
                "met": (abs(drop) if variant == "png" else drop)
                <= (PNG_TARGET_POINTS if variant == "png" else PHOTO_TARGET_POINTS)
                and versions <= {version},
            }
            r = results[variant]
            print(
                f"{variant:>5}: accuracy {accuracy:.4f} (offline {offline:.4f}, drop {drop:+.2f} points), "
                f"agrees with offline on {r['agreement_with_offline']:.2%}, {failures} non-200, "
                f"{r['images_per_s']:.0f} images/s",
                file=sys.stderr,
            )

    payload = {
        "benchmark": "http_accuracy",
        "machine": common.machine(),
        "settings": {
            "models_dir": str(args.models_dir),
            "url": args.url,
            "digits": len(labels),
            "batch": args.batch,
            "concurrency": args.concurrency,
        },
        "version": version,
        "offline_accuracy": offline,
        "manifest_test_accuracy": manifest.get("test_accuracy"),
        "variants": results,
    }
    path = common.write_json("http_accuracy", payload, args.out)
    print(table(payload))
    print(f"\nwritten to {path}")
    return 0


def table(payload: dict[str, Any]) -> str:
    lines = [
        f"model {payload['version']}, offline accuracy {payload['offline_accuracy']:.4f} "
        f"on {payload['settings']['digits']} test digits",
        "",
        "| input | accuracy | vs offline | target | agreement | non-200 | images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in payload["variants"].items():
        target = f"within ±{r['target_points']}" if name == "png" else f"drop <= {r['target_points']}"
        lines.append(
            f"| {name} | {r['accuracy']:.4f} | {0.0 - r['drop_points'] + 0.0:+.2f} pt | {target} "
            f"({'met' if r['met'] else 'NOT met'}) | {r['agreement_with_offline']:.2%} "
            f"| {r['non_200_responses']} | {r['images_per_s']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
