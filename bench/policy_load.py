"""`POST /predict` req/s and latency under wrk with no routing policy, a shadow policy and a canary.

    .venv/bin/python bench/policy_load.py                                  # c=1 and 64, 5 rounds of 10 s
    .venv/bin/python bench/policy_load.py --concurrency 1,8,64 --rounds 3 --duration 5
    .venv/bin/python bench/policy_load.py --servers none,shadow --concurrency 1 --rounds 1 --duration 1

The issue's targets (issue 16, part 1): a shadow version costs the response path nothing measurable
at concurrency 1 and at most 15 % of req/s at 64; the split a canary gets is within 1.5 points of
its setting. Servers, one worker each, the same code, each on its own copy of the registry (the
policy is stored beside the pointer, so the copies keep the policies apart):

- `none`: no policy, today's path (one attribute checked);
- `shadow`: `{"mode": "shadow", "version": <the other version>}`: every request also computed by
  the other version, off the response path, and compared;
- `shadow25`: the same shadow on a random 25 % of the requests (not run unless named);
- `shadow0`: the same policy on none of them: what the policy's bookkeeping alone costs (not run
  unless named);
- `canary`: `{"mode": "canary", "version": <the other version>, "percent": 10}`;
- `none2`: a second server with no policy, the same as `none`: its ratio to `none` (an A/A pair)
  says how far apart two identical servers measure on this machine, which is what "nothing
  measurable" is judged against.

Each ratio to `none` is taken within a round; the table gives their median and quartiles.

The registry is `--models-dir` (default: the shipped `models/`, which has v0001 and v0002), copied;
the candidate is its newest version that is not current. CPUs as in bench/serve_load.py: the
servers pinned to CPU 0 (and so the shadow's worker processes), wrk to CPU 1. Every round runs
every (concurrency, server) pair once, in an order that reverses every round; figures are medians
over rounds. After the runs each server's /metrics gives what the shadow compared and dropped, and
the share of requests the canary answered (over every request of every run, far more than 10,000).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import _serve_common as common
from _wrk import Wrk
from prometheus_client.parser import text_string_to_metric_families

CANARY_PERCENT = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument(
        "--servers",
        default="none,shadow,canary",
        help="which of none, none2, shadow, shadow25, shadow0, canary",
    )
    parser.add_argument("--concurrency", default="1,64", help="wrk connections, e.g. 1,64")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats of every run")
    parser.add_argument("--image", type=int, default=0, help="which t10k digit to post")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk with taskset")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: bench/results/policy_load-<time>.json)"
    )
    return parser.parse_args(argv)


def policies(candidate: str) -> dict[str, dict[str, Any] | None]:
    return {
        "none": None,
        "none2": None,  # a second server without a policy: the A/A pair says what noise is
        "shadow": {"mode": "shadow", "version": candidate},
        "shadow25": {"mode": "shadow", "version": candidate, "percent": 25},  # a sample of the traffic
        "shadow0": {"mode": "shadow", "version": candidate, "percent": 0},  # the policy's bookkeeping alone
        "canary": {"mode": "canary", "version": candidate, "percent": CANARY_PERCENT},
    }


def candidate_of(models_dir: Path) -> tuple[str, str]:
    """(current, the newest other version) of the registry's mnist model."""
    folder = models_dir / "mnist"
    current = json.loads((folder / "current").read_text())["version"]
    others = sorted(p.stem for p in folder.glob("v*.json") if p.stem != current)
    if not others:
        sys.exit(f"{folder} has one version only: a policy needs a second one (train one first)")
    return current, others[-1]


def set_policy(server: common.Server, policy: dict[str, Any]) -> None:
    request = urllib.request.Request(
        server.url + "/models/policy",
        data=json.dumps(policy).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {common.TOKEN}"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 200:
            raise RuntimeError(f"{server.name}: PUT /models/policy answered {response.status}")


def policy_figures(server: common.Server) -> dict[str, float]:
    """From the server's /metrics: requests by role, the shadow's comparisons and drops."""
    _, text = common.http_get(server.url + "/metrics", timeout=10.0)
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == "mnist_policy_requests_total":
                key = f"requests_{s.labels['role']}"
            elif s.name == "mnist_shadow_comparisons_total":
                key = "agree" if s.labels["agree"] == "true" else "disagree"
            elif s.name == "mnist_shadow_dropped_total":
                key = "dropped_digits"
            else:
                continue
            figures[key] = figures.get(key, 0.0) + s.value
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_models_dir(args.models_dir)
    names = [n for n in args.servers.split(",") if n]
    levels = [int(c) for c in args.concurrency.split(",")]
    current, candidate = candidate_of(args.models_dir)
    wanted = policies(candidate)
    unknown = set(names) - set(wanted)
    if unknown:
        sys.exit(f"unknown servers {sorted(unknown)}: choose from {', '.join(wanted)}")

    images, _ = common.load_mnist_test()
    png = common.encode_png(images[args.image])
    body, content_type = common.multipart([("digit.png", png, "image/png")])

    scratch = Path(tempfile.mkdtemp(prefix="policy-load-"))
    cpus = None if args.no_pin else "0"
    servers = []
    for name in names:
        models = scratch / f"models-{name}"
        shutil.copytree(args.models_dir, models, ignore=shutil.ignore_patterns("policy", ".lock"))
        servers.append(common.service_server(name, models, scratch / f"state-{name}", cpus=cpus))
    before = common.machine()
    print(
        f"load average before: {before['load_average']}; current {current}, candidate {candidate}",
        file=sys.stderr,
    )
    runs: list[dict[str, Any]] = []
    try:
        with common.running(servers, scratch):
            wrk = Wrk(body, content_type, cpus=None if args.no_pin else "1")
            try:
                for server in servers:
                    if (policy := wanted[server.name]) is not None:
                        set_policy(server, policy)
                    status, answer = common.http_post(
                        server.url + "/predict", body, {"Content-Type": content_type}
                    )
                    if status != 200:
                        raise RuntimeError(f"{server.name}: /predict answered {status}: {answer[:300]!r}")
                    wrk.run(server.url + "/predict", 8, 1.0)  # warm up
                pairs = list(itertools.product(levels, servers))
                for r in range(args.rounds):
                    for c, server in pairs if r % 2 == 0 else pairs[::-1]:
                        cpu_before = server.cpu_seconds()
                        res = wrk.run(server.url + "/predict", c, args.duration)
                        cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(res.requests, 1)
                        runs.append(
                            {
                                "round": r,
                                "server": server.name,
                                "concurrency": c,
                                "rps": round(res.rps, 1),
                                "p50_ms": res.p50_ms,
                                "p99_ms": res.p99_ms,
                                "requests": res.requests,
                                "server_cpu_ms_per_request": round(cpu_ms, 3),
                                "errors": res.errors,
                                "load_average": common.load_average(),
                            }
                        )
                        print(
                            f"round {r} c={c:<3} {server.name:<7} {res.rps:8.0f} req/s  "
                            f"p50 {res.p50_ms:6.2f}  p99 {res.p99_ms:6.2f} ms  cpu/req {cpu_ms:5.2f} ms  "
                            f"errors {res.failed}",
                            file=sys.stderr,
                        )
                figures = {server.name: policy_figures(server) for server in servers}
            finally:
                wrk.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(runs, levels, names)
    after = common.load_average()
    payload = {
        "benchmark": "policy_load",
        "machine": before,
        "load_average_after": after,
        "settings": {
            "models_dir": str(args.models_dir),
            "current": current,
            "candidate": candidate,
            "concurrency": levels,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "policies": {name: wanted[name] for name in names},
            "pinned": not args.no_pin,
        },
        "summary": summary,
        "policy_figures": figures,
        "runs": runs,
    }
    path = common.write_json("policy_load", payload, args.out)
    print(table(summary, figures, before["load_average"], after))
    print(f"\nwritten to {path}")
    return 0


def summarise(runs: list[dict[str, Any]], levels: list[int], names: list[str]) -> list[dict[str, Any]]:
    """Per (concurrency, server): medians, and the ratio to `none` of the same round."""
    rows = []
    for c, name in itertools.product(levels, names):

        def pick(server: str, c: int = c) -> dict[int, dict[str, Any]]:
            return {run["round"]: run for run in runs if run["server"] == server and run["concurrency"] == c}

        mine, base = pick(name), pick("none")
        rounds = sorted(mine)
        row: dict[str, Any] = {
            "concurrency": c,
            "server": name,
            "rps": common.median([mine[r]["rps"] for r in rounds]),
            "p50_ms": common.median([mine[r]["p50_ms"] for r in rounds]),
            "p99_ms": common.median([mine[r]["p99_ms"] for r in rounds]),
            "cpu_ms": common.median([mine[r]["server_cpu_ms_per_request"] for r in rounds]),
            "failed": sum(sum(mine[r]["errors"].values()) for r in rounds),
        }
        shared = [r for r in rounds if r in base]
        if shared:
            ratios = sorted(mine[r]["rps"] / base[r]["rps"] for r in shared)
            row["rps_vs_none"] = common.median(ratios)
            row["rps_vs_none_quartiles"] = [ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]]
        rows.append(row)
    return rows


def table(
    summary: list[dict[str, Any]], figures: dict[str, dict[str, float]], load_before: Any, load_after: Any
) -> str:
    lines = [
        f"load average before {load_before}, after {load_after}",
        "",
        "| conc. | server | req/s | vs none | its quartiles | p50 ms | p99 ms | CPU ms/req | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        ratio, quartiles = row.get("rps_vs_none"), row.get("rps_vs_none_quartiles")
        spread = "" if quartiles is None or row["server"] == "none" else "{:.3f}-{:.3f}".format(*quartiles)
        lines.append(
            f"| {row['concurrency']} | {row['server']} | {row['rps']:.0f} | "
            f"{'' if ratio is None else f'{ratio:.3f}x'} | {spread} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['cpu_ms']:.3f} | {row['failed']} |"
        )
    if "shadow" in figures:
        f = figures["shadow"]
        compared = f.get("agree", 0) + f.get("disagree", 0)
        dropped = f.get("dropped_digits", 0)
        agree = 100 * f.get("agree", 0) / max(compared, 1)
        lost = 100 * dropped / max(compared + dropped, 1)
        lines.append(
            f"\nshadow: {compared:.0f} digits compared ({agree:.2f} % agree), "
            f"{dropped:.0f} dropped ({lost:.2f} % of those it was given)"
        )
    if "canary" in figures:
        f = figures["canary"]
        total = f.get("requests_canary", 0) + f.get("requests_current", 0)
        share = 100 * f.get("requests_canary", 0) / max(total, 1)
        lines.append(
            f"canary: {share:.2f} % of {total:.0f} requests (setting {CANARY_PERCENT:g} %, "
            f"off by {abs(share - CANARY_PERCENT):.2f} points)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
