"""wrk as the load generator of the serving benchmarks: one fixed body, results as JSON.

A Lua script posts the body from a file on every request, with its Content-Type and any other
headers given (the V2 binary tensor extension's `Inference-Header-Content-Length`, say), and writes
wrk's summary (requests, errors, latency percentiles) to a JSON file, which `Wrk.run` reads back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _serve_common import taskset

WRK_SCRIPT = r"""
-- POST the same body on every request; write the summary as JSON when done.
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE")
-- more headers, one "Name<TAB>value" per line
for line in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^\t]+)\t(.*)$")
  wrk.headers[name] = value
end

done = function(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(os.getenv("WRK_RESULT_FILE"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
  out:close()
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


class Wrk:
    """Runs wrk against a URL with a fixed body (and extra `headers`), pinned to `cpus`."""

    def __init__(
        self, body: bytes, content_type: str, cpus: str | None = None, headers: dict[str, str] | None = None
    ):
        if shutil.which("wrk") is None:
            sys.exit("wrk is not installed: apt-get install -y wrk")
        self.folder = Path(tempfile.mkdtemp(prefix="wrk-"))
        (self.folder / "body.bin").write_bytes(body)
        (self.folder / "post.lua").write_text(WRK_SCRIPT)
        self.content_type = content_type
        self.cpus = cpus
        self.headers = headers or {}

    def run(self, url: str, connections: int, seconds: float, threads: int = 1) -> WrkResult:
        result_file = self.folder / "result.json"
        result_file.unlink(missing_ok=True)
        command = [
            *taskset(self.cpus),
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.folder / "post.lua"),
            url,
        ]
        env = {
            **os.environ,
            "WRK_BODY_FILE": str(self.folder / "body.bin"),
            "WRK_CONTENT_TYPE": self.content_type,
            "WRK_HEADERS": "\n".join(f"{name}\t{value}" for name, value in self.headers.items()),
            "WRK_RESULT_FILE": str(result_file),
        }
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        raw = json.loads(result_file.read_text())
        lat = raw["latency_us"]
        secs = raw["duration_us"] / 1e6
        return WrkResult(
            requests=raw["requests"],
            seconds=secs,
            rps=raw["requests"] / secs,
            p50_ms=lat["p50"] / 1000,
            p90_ms=lat["p90"] / 1000,
            p99_ms=lat["p99"] / 1000,
            mean_ms=lat["mean"] / 1000,
            max_ms=lat["max"] / 1000,
            errors=raw["errors"],
        )

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
