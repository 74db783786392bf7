"""Cold start: seconds from spawning `python -m service` until /readyz answers 200.

    .venv/bin/python bench/cold_start.py                       # the shipped model in models/
    .venv/bin/python bench/cold_start.py --models-dir /tmp/bench-models --runs 9
    .venv/bin/python bench/cold_start.py --imports             # also: the slowest imports
    .venv/bin/python bench/cold_start.py --python /tmp/venv-debian/bin/python

The last form measures another interpreter, e.g. the one the Docker image and a fresh Debian
machine run (`/usr/bin/python3 -m venv /tmp/venv-debian && /tmp/venv-debian/bin/pip install -r
requirements.txt`): Python's speed depends on how it was built, and a source build without
--enable-optimizations (pyenv's default) starts FastAPI ~20-30 % slower than Debian's python3.

Each run starts a fresh process (new, empty state folder, 1 worker, access log off) and polls
/readyz every 5 ms; the service only answers once the lifespan has loaded, validated and warmed
up the current version, so "ready" means ready to predict. A first, unmeasured run warms the
page cache (the figure is a restart on a warm machine, not a first boot after install). The
project's modules are byte-compiled first, as the Docker image does at build time and Python does
by itself on a first run (unless PYTHONDONTWRITEBYTECODE is set, as it is in some sandboxes). The
median of `--runs` is reported against the 1 s target, beside the time until the port answered
at all and one real /predict, and the load average (other work on the machine slows everything).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _serve_common as common

from registry import Registry

TARGET_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--python",
        default=common.PYTHON,
        help="the interpreter of a virtualenv with requirements.txt to start both apps with "
        "(default: this one); e.g. one made from Debian's python3, as the Docker image has",
    )
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--imports", action="store_true", help="list the slowest imports (-X importtime)")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/cold_start-<time>.json)"
    )
    return parser.parse_args(argv)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.05)
        return s.connect_ex(("127.0.0.1", port)) == 0


def one_start(
    models_dir: Path | None, python: str, timeout: float, body: bytes, content_type: str
) -> dict[str, float]:
    """One start of the service (or, with `models_dir` None, of the no-op app) until it answers."""
    with tempfile.TemporaryDirectory(prefix="cold-start-") as scratch:
        if models_dir is None:
            server = common.noop_server("noop", python=python)
        else:
            server = common.service_server("service", models_dir, Path(scratch) / "state", python=python)
        started = time.perf_counter()
        server.start(Path(scratch))
        listening = None
        try:
            while True:
                if server.process.poll() is not None:
                    raise RuntimeError(f"the service exited:\n{server.log_tail()}")
                now = time.perf_counter() - started
                if now > timeout:
                    raise RuntimeError(f"not ready after {timeout} s:\n{server.log_tail()}")
                if listening is None and port_open(server.port):
                    listening = now
                if listening is not None:
                    try:
                        if common.http_get(server.url + "/readyz", timeout=1.0)[0] == 200:
                            ready = time.perf_counter() - started
                            break
                    except OSError:
                        pass
                time.sleep(0.005)
            status, _ = common.http_post(server.url + "/predict", body, {"Content-Type": content_type})
            first_answer = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"/predict answered {status} right after ready")
        finally:
            server.stop()
    return {"listening_s": listening, "ready_s": ready, "first_prediction_s": first_answer}


def slowest_imports(python: str, top: int = 12) -> list[tuple[str, float]]:
    """Cumulative import time of the packages `python -m service` loads, slowest first: each
    top-level package (fastapi, numpy, uvicorn, PIL, ...) and the project's own modules."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import service.__main__, service.app"],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s*(\S+)", line)
        if not m:
            continue
        name, seconds = m.group(2), int(m.group(1)) / 1e6
        if "." not in name or name.startswith(("service.", "trainer.", "mlp.")):
            rows[name] = max(rows.get(name, 0.0), seconds)
    return sorted(rows.items(), key=lambda r: -r[1])[:top]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_models_dir(args.models_dir)
    images, _ = common.load_mnist_test()
    body, content_type = common.multipart([("digit.png", common.encode_png(images[0]), "image/png")])
    version = Registry(args.models_dir, "mnist").current()
    manifest = json.loads((args.models_dir / "mnist" / f"{version}.json").read_text())
    # what the Dockerfile does; without it every start would compile the project's sources again
    subprocess.run(
        [args.python, "-m", "compileall", "-q", "mlp", "trainer", "service"], cwd=common.ROOT, check=True
    )
    load_before = common.load_average()
    one_start(args.models_dir, args.python, args.timeout, body, content_type)  # warm the page cache
    one_start(None, args.python, args.timeout, body, content_type)
    runs, noop_runs = [], []
    for i in range(args.runs):  # interleaved with the no-op app: the floor FastAPI + uvicorn set
        runs.append(one_start(args.models_dir, args.python, args.timeout, body, content_type))
        noop_runs.append(one_start(None, args.python, args.timeout, body, content_type))
        r = runs[-1]
        print(
            f"run {i}: port open {r['listening_s']:.3f} s, ready {r['ready_s']:.3f} s, "
            f"first prediction {r['first_prediction_s']:.3f} s; no-op app ready "
            f"{noop_runs[-1]['ready_s']:.3f} s",
            file=sys.stderr,
        )
    summary = {
        key: round(common.median([r[key] for r in runs]), 3)
        for key in ("listening_s", "ready_s", "first_prediction_s")
    }
    payload = {
        "benchmark": "cold_start",
        "machine": common.machine(),
        "load_average_before": load_before,
        "settings": {"models_dir": str(args.models_dir), "runs": args.runs, "python": args.python},
        "python_version": subprocess.run(
            [args.python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "model": {k: manifest.get(k) for k in ("version", "preset", "sizes", "num_params")},
        "npz_bytes": os.path.getsize(args.models_dir / "mnist" / f"{version}.npz"),
        "median": summary,
        "min_ready_s": round(min(r["ready_s"] for r in runs), 3),
        "max_ready_s": round(max(r["ready_s"] for r in runs), 3),
        "target_s": TARGET_S,
        "met": summary["ready_s"] <= TARGET_S,
        "noop_app_median_ready_s": round(common.median([r["ready_s"] for r in noop_runs]), 3),
        "runs": runs,
        "noop_runs": noop_runs,
    }
    if args.imports:
        payload["slowest_imports_s"] = slowest_imports(args.python)
    path = common.write_json("cold_start", payload, args.out)
    print(
        f"model {version} ({manifest.get('preset')}, sizes {manifest.get('sizes')}), "
        f"load average {load_before}\npython {args.python} ({payload['python_version'].split()[0]})\n"
        f"median of {args.runs}: port open {summary['listening_s']:.3f} s, ready {summary['ready_s']:.3f} s "
        f"(min {payload['min_ready_s']:.3f}, max {payload['max_ready_s']:.3f}; target <= {TARGET_S} s: "
        f"{'met' if payload['met'] else 'NOT met'}), first prediction {summary['first_prediction_s']:.3f} s\n"
        f"the no-op FastAPI app (bench/noop_app.py), same runs: "
        f"ready {payload['noop_app_median_ready_s']:.3f} s"
    )
    for name, seconds in payload.get("slowest_imports_s", []):
        print(f"  import {name:<40} {seconds:.3f} s")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
