"""V2 inference beside MLServer, KServe, LitServe and BentoML: one benchmark with its peers, one script.

    .venv/bin/python bench/oip_peers.py --setup            # create the peers' virtualenvs if missing
    .venv/bin/python bench/oip_peers.py                    # 5 interleaved rounds of 10 s runs
    .venv/bin/python bench/oip_peers.py --rounds 1 --duration 3 --only service,kserve   # a quick look
    .venv/bin/python bench/oip_peers.py --only service --variant noroute=MNIST_FAST_PATHS=-route   # a config

Same weights, same forward pass: every peer loads the registry's current `vNNNN.npz` into the
project's own `mlp.MLP` (imported from this checkout) and answers with `predict_proba`, so what
differs is the serving (bench/peers/ has the four small apps, each in the peer's idiomatic form).
Each peer runs in its own virtualenv under bench/.peers/ (gitignored; `--setup` makes them with the
pinned versions below). MLServer runs inference in its HTTP process (`parallel_workers: 0`, its
faster setting; its separate inference process dies at start with uvloop >= 0.22, which its venv
may carry).

CPUs: every server is pinned to CPU 0 (`taskset`), wrk to CPU 1; all servers stay up for the whole
run, the idle ones asleep. Loads (wrk, keep-alive, one thread): one image per request at 1, 8 and 64
connections, and a [64, 784] batch at 8; V2 JSON (FP32 pixels / 255, the body tritonclient's JSON
mode sends: every float32 written in full) for every server, V2 binary (the binary tensor extension)
for the servers that have it (this service, KServe), and this service's `/predict` with a PNG.

The machine is shared and noisy, so the runs are interleaved: every round runs every (load, server)
pair once, in an order that reverses every round, and a figure is the median over rounds; a peer is
never measured in a quiet minute that the others did not get. Memory: the resident set of each
server process after the rounds (the largest process of the server's tree: its worker; and the
tree's total). Results: JSON in bench/results/, a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _serve_common as common
import numpy as np
from _wrk import Wrk, WrkResult

PEERS_DIR = common.ROOT / "bench" / ".peers"
APPS_DIR = common.ROOT / "bench" / "peers"
# name -> the pinned packages of its virtualenv (numpy as the service's)
PINS = {
    "mlserver": ["mlserver==1.7.1", "uvloop==0.21.0", "numpy==2.4.6"],
    "kserve": ["kserve==0.21.0", "numpy==2.4.6"],
    "litserve": ["litserve==0.2.19", "numpy==2.4.6"],
    "bentoml": ["bentoml==1.4.40", "numpy==2.4.6"],
}
HEADER = "Inference-Header-Content-Length"
SERVER_CPU, WRK_CPU = "0", "1"


# -- the peers' virtualenvs ----------------------------------------------------------------------


def venv_python(name: str) -> Path:
    return PEERS_DIR / name / "bin" / "python"


def runnable(python: Path, module: str) -> bool:
    with contextlib.suppress(OSError):
        done = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, check=False)
        return done.returncode == 0
    return False


def relink(folder: Path) -> None:
    """Make a venv's links links again where a copy flattened them into files holding their target."""
    for path in [folder / "lib64", *(folder / "bin").glob("python*")]:
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 256:
            target = path.read_text().strip()
            if target and "\n" not in target and not target.startswith("#!"):
                path.unlink()
                path.symlink_to(target)


def setup(names: list[str]) -> None:
    """Create (or repair) each peer's virtualenv with its pinned versions."""
    for name in names:
        folder, module = PEERS_DIR / name, name
        if folder.exists() and not runnable(venv_python(name), module):
            relink(folder)
        if runnable(venv_python(name), module):
            print(f"{name}: {folder} is ready")
            continue
        print(f"{name}: creating {folder} with {' '.join(PINS[name])} (log: {folder}.log)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{folder}.log", "wb") as log:
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, stdout=log, stderr=log)
            subprocess.run(
                [str(venv_python(name)), "-m", "pip", "install", "--quiet", *PINS[name]],
                check=True,
                stdout=log,
                stderr=log,
            )
        if not runnable(venv_python(name), module):
            sys.exit(f"{name}: {folder} was made but cannot import {module}; see {folder}.log")


# -- the servers ---------------------------------------------------------------------------------


@dataclass
class Target:
    """One server under load: its process, where its V2 JSON, V2 binary and PNG requests go."""

    name: str
    server: common.Server
    json_path: str
    binary_path: str | None = None
    png_path: str | None = None
    ready_path: str = "/v2/health/ready"
    results: dict[str, list[WrkResult]] = field(default_factory=dict)


def peer_env(weights: Path) -> dict[str, str]:
    return {"PEER_WEIGHTS": str(weights), "PYTHONPATH": f"{common.ROOT}{os.pathsep}{APPS_DIR}"}


def make_targets(
    names: list[str],
    weights: Path,
    models_dir: Path,
    work: Path,
    checkouts: dict[str, Path],
    variants: dict[str, dict[str, str]],
) -> list[Target]:
    targets = []
    for name in names:
        port = common.free_port()
        if name == "service" or name in checkouts or name in variants:
            state = work / f"state-{name}"
            server = common.service_server(
                name,
                models_dir,
                state,
                cpus=SERVER_CPU,
                checkout=checkouts.get(name, common.ROOT),
                extra_env=variants.get(name),
            )
            this_code = name not in checkouts  # older code: JSON only
            targets.append(
                Target(
                    name,
                    server,
                    "/v2/models/mnist/infer",
                    "/v2/models/mnist/infer" if this_code else None,
                    "/predict",
                    ready_path="/readyz",
                )
            )
            continue
        python = str(venv_python(name))
        env = peer_env(weights)
        if name == "mlserver":
            folder = work / "mlserver"
            (folder / "mnist").mkdir(parents=True)
            settings = {"parallel_workers": 0, "http_port": port, "grpc_port": common.free_port()}
            settings |= {"metrics_port": common.free_port(), "debug": False}
            (folder / "settings.json").write_text(json.dumps(settings))
            model = {"name": "mnist", "implementation": "mlserver_model.Mnist"}
            (folder / "mnist" / "model-settings.json").write_text(json.dumps(model))
            command = [python, "-m", "mlserver.cli.main", "start", str(folder)]
            mlserver_bin = venv_python(name).with_name("mlserver")
            if mlserver_bin.exists():
                command = [python, str(mlserver_bin), "start", str(folder)]
            server = common.Server(name, command, port, env=env, cpus=SERVER_CPU, cwd=APPS_DIR)
            targets.append(Target(name, server, "/v2/models/mnist/infer"))
        elif name == "kserve":
            command = [python, "kserve_model.py", "--http_port", str(port), "--enable_grpc", "false"]
            command += ["--workers", "1"]
            server = common.Server(name, command, port, env=env, cpus=SERVER_CPU, cwd=APPS_DIR)
            targets.append(Target(name, server, "/v2/models/mnist/infer", "/v2/models/mnist/infer"))
        elif name == "litserve":
            command = [python, "litserve_app.py", str(port)]
            server = common.Server(name, command, port, env=env, cpus=SERVER_CPU, cwd=APPS_DIR)
            targets.append(Target(name, server, "/predict", ready_path="/health"))
        elif name == "bentoml":
            bentoml_bin = venv_python(name).with_name("bentoml")
            command = [python, str(bentoml_bin), "serve", "bentoml_service:Mnist", "--port", str(port)]
            command += ["--host", "127.0.0.1"]
            env = {**env, "BENTOML_HOME": str(work / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "True"}
            server = common.Server(name, command, port, env=env, cpus=SERVER_CPU, cwd=APPS_DIR)
            targets.append(Target(name, server, "/infer", ready_path="/readyz"))
        else:
            sys.exit(f"unknown server {name!r}")
    return targets


# -- the bodies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One kind of request: a body (with its headers) and the concurrency it is sent at."""

    name: str  # e.g. "json 1 image"
    kind: str  # json | binary | png
    rows: int
    connections: int


def v2_json(images: np.ndarray) -> bytes:
    """FP32 pixels / 255 as tritonclient's JSON mode writes them (float32 values as Python floats)."""
    pixels = (images.reshape(len(images), 784) / 255).astype(np.float32)
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": [len(images), 784],
        "data": pixels.ravel().tolist(),
    }
    return json.dumps({"id": "bench", "inputs": [tensor]}).encode()


def v2_binary(images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    pixels = (images.reshape(len(images), 784) / 255).astype("<f4")
    tensor = {"name": "input", "datatype": "FP32", "shape": [len(images), 784]}
    tensor["parameters"] = {"binary_data_size": pixels.nbytes}
    header = json.dumps(
        {"id": "bench", "inputs": [tensor], "parameters": {"binary_data_output": True}}
    ).encode()
    return header + pixels.tobytes(), {HEADER: str(len(header))}


def body_for(target: Target, load: Load, images: np.ndarray) -> tuple[str, bytes, str, dict[str, str]] | None:
    """(path, body, content type, headers) of `load` for `target`, or None if it does not serve it."""
    rows = images[: load.rows]
    if load.kind == "json":
        body = v2_json(rows)
        if target.name == "bentoml":  # its API's parameters are the body's keys: inputs, id
            body = json.dumps({"inputs": json.loads(body)["inputs"], "id": "bench"}).encode()
        return target.json_path, body, "application/json", {}
    if load.kind == "binary" and target.binary_path:
        body, headers = v2_binary(rows)
        return target.binary_path, body, "application/octet-stream", headers
    if load.kind == "png" and target.png_path:
        return target.png_path, common.encode_png(rows[0]), "image/png", {}
    return None


def labels_of(kind: str, status: int, content: bytes, headers: dict[str, str]) -> list[int]:
    """The digits in an answer (to check every server reads the same body the same way)."""
    assert status == 200, (status, content[:300])
    if kind == "png":
        return [p["digit"] for p in json.loads(content)["predictions"]]
    length = int(headers.get(HEADER.lower(), len(content)))
    answer = json.loads(content[:length])
    offset = length
    for output in answer["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == "label":
            if size is None:
                return [int(v) for v in output["data"]]
            return np.frombuffer(content[offset : offset + size], "<i8").tolist()
        offset += size or 0
    raise AssertionError("no label output")


def post(
    url: str, body: bytes, content_type: str, headers: dict[str, str]
) -> tuple[int, bytes, dict[str, str]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {}


# -- memory --------------------------------------------------------------------------------------


def rss_of_tree(pid: int) -> tuple[float, float]:
    """(largest process, whole tree) resident set in MiB, from /proc."""
    sizes, todo = [], [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return (max(sizes) if sizes else float("nan"), sum(sizes))


# -- the run -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true", help="create the peers' virtualenvs, then exit")
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--only", default="service,mlserver,kserve,litserve,bentoml", help="servers to run")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats of every run")
    parser.add_argument("--kinds", default="json,binary,png", help="request kinds: json, binary, png")
    parser.add_argument(
        "--match",
        default="",
        help="only the loads whose name holds this (or one of these, comma-separated), e.g. c=64",
    )
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also measure the service of another checkout (a git worktree of an older commit) as NAME",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=ENV=VALUE[,ENV=VALUE]",
        help="also measure this checkout's service with these extra environment variables, as NAME",
    )
    parser.add_argument("--out", type=Path, help="JSON output (default: bench/results/oip_peers-<time>.json)")
    return parser.parse_args(argv)


def loads(kinds: list[str]) -> list[Load]:
    out = []
    for kind in kinds:
        for connections in (1, 8, 64):
            out.append(Load(f"{kind} 1 image c={connections}", kind, 1, connections))
        if kind != "png":
            out.append(Load(f"{kind} [64,784] c=8", kind, 64, 8))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkouts = {name: Path(path).resolve() for name, _, path in (c.partition("=") for c in args.checkout)}
    variants = dict(common.parse_variant(v) for v in args.variant)
    names = args.only.split(",")
    names[1:1] = [*checkouts, *variants]  # beside this checkout's service, before the peers
    peers = [n for n in names if n != "service" and n not in checkouts and n not in variants]
    if args.setup:
        setup(peers)
        return 0
    common.check_models_dir(args.models_dir)
    missing = [n for n in peers if not runnable(venv_python(n), n)]
    if missing:
        sys.exit(f"no working virtualenv for {', '.join(missing)}: run bench/oip_peers.py --setup")
    version = json.loads((args.models_dir / "mnist" / "current").read_text())["version"]
    weights = args.models_dir / "mnist" / f"{version}.npz"
    images, _ = common.load_mnist_test()
    work = Path(tempfile.mkdtemp(prefix="oip-peers-"))
    targets = make_targets(names, weights, args.models_dir, work, checkouts, variants)
    wanted = args.match.split(",")
    plan = [load for load in loads(args.kinds.split(",")) if any(w in load.name for w in wanted)]
    before = common.machine()
    print(f"# {len(targets)} servers, {len(plan)} loads, {args.rounds} rounds of {args.duration} s; {before}")
    wrks: dict[tuple[str, str], tuple[str, Wrk]] = {}
    try:
        for target in targets:
            target.server.start(work)
        for target in targets:
            target.server.wait_ready(timeout_s=120, path=target.ready_path)
        pairs = prepare(targets, plan, images, wrks)
        print(f"# every server reads the test bodies alike; ready. {len(pairs)} runs a round", flush=True)
        for round_no in range(args.rounds):
            order = pairs if round_no % 2 == 0 else pairs[::-1]
            for target, load in order:
                path, wrk = wrks[(target.name, load.name)]
                result = wrk.run(target.server.url + path, load.connections, args.duration)
                target.results.setdefault(load.name, []).append(result)
                print(
                    f"round {round_no + 1} {target.name:9s} {load.name:24s} {result.rps:8.0f} req/s "
                    f"p50 {result.p50_ms:7.2f} p90 {result.p90_ms:7.2f} p99 {result.p99_ms:7.2f} ms"
                    + (f" FAILED {result.errors}" if result.failed else ""),
                    flush=True,
                )
        memory = {t.name: rss_of_tree(t.server.process.pid) for t in targets if t.server.process}
    finally:
        for target in targets:
            target.server.stop()
        for _, wrk in wrks.values():
            wrk.close()
    report = summarize(targets, plan, memory, before, args)
    out = common.write_json("oip_peers", report, args.out)
    print(markdown(report))
    print(f"\nwritten {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def prepare(
    targets: list[Target], plan: list[Load], images: np.ndarray, wrks: dict[tuple[str, str], tuple[str, Wrk]]
) -> list[tuple[Target, Load]]:
    """A wrk per (server, load) it serves; each body sent once first, the answers checked alike."""
    pairs = []
    for load in plan:
        expected: list[int] | None = None
        for target in targets:
            spec = body_for(target, load, images)
            if spec is None:
                continue
            path, body, content_type, headers = spec
            for _ in range(3):  # the first calls of a route are its slowest (imports, first batch)
                status, content, answer_headers = post(target.server.url + path, body, content_type, headers)
            try:
                labels = labels_of(load.kind, status, content, answer_headers)
            except AssertionError as exc:
                raise AssertionError(f"{target.name}, {load.name}: {exc}") from None
            if expected is None:
                expected = labels
            elif labels != expected:
                raise AssertionError(
                    f"{target.name} reads {load.name} as {labels[:8]}, others {expected[:8]}"
                )
            wrks[(target.name, load.name)] = (path, Wrk(body, content_type, WRK_CPU, headers))
            pairs.append((target, load))
    return pairs


def summarize(
    targets: list[Target],
    plan: list[Load],
    memory: dict[str, tuple[float, float]],
    before: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for target in targets:
        for load in plan:
            results = target.results.get(load.name)
            if not results:
                continue
            rows.setdefault(load.name, {})[target.name] = {
                "rps": common.median([r.rps for r in results]),
                "p50_ms": common.median([r.p50_ms for r in results]),
                "p90_ms": common.median([r.p90_ms for r in results]),
                "p99_ms": common.median([r.p99_ms for r in results]),
                "rps_rounds": [round(r.rps, 1) for r in results],
                "p99_rounds": [round(r.p99_ms, 2) for r in results],
                "failed": sum(r.failed for r in results),
            }
    return {
        "benchmark": "oip_peers",
        "machine_before": before,
        "load_average_after": common.load_average(),
        "checkouts": args.checkout,
        "variants": args.variant,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "results": rows,
        "memory_mib": {
            name: {"largest": round(m[0], 1), "tree": round(m[1], 1)} for name, m in memory.items()
        },
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| load | server | req/s (median) | p50 ms | p90 ms | p99 ms | vs best peer |",
        "|---|---|---|---|---|---|---|",
    ]
    for load, servers in report["results"].items():
        peers = [v["rps"] for k, v in servers.items() if k in PINS]
        best = max(peers) if peers else None
        for name, row in servers.items():
            ratio = f"{row['rps'] / best:.2f}x" if best and name == "service" else ""
            lines.append(
                f"| {load} | {name} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | {ratio} |"
            )
    lines += [
        "",
        "| server | RSS of its largest process (MiB) | RSS of its process tree (MiB) |",
        "|---|---|---|",
    ]
    for name, memory in report["memory_mib"].items():
        lines.append(f"| {name} | {memory['largest']:.0f} | {memory['tree']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
