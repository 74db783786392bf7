"""uvicorn's logging with one change: successful health probes stay out of the access log.

Docker's health check asks /readyz every few seconds and an orchestrator asks /livez as often; one
line each drowned the requests people want to read. A probe that fails (503) is still logged.
The filter is named in uvicorn's logging configuration, so every worker process applies it too.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

PROBES = frozenset({"/livez", "/readyz", "/v2/health/live", "/v2/health/ready"})


class QuietProbes(logging.Filter):
    """Drops uvicorn access records of a GET to a probe that answered 2xx."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:  # (client, method, path, http version, status)
            return True
        _, method, path, _, status = args
        ok = isinstance(status, int) and 200 <= status < 300
        return not (ok and method == "GET" and str(path).split("?")[0] in PROBES)


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with QuietProbes on the access handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["quiet_probes"] = {"()": f"{__name__}.QuietProbes"}
    config["handlers"]["access"]["filters"] = ["quiet_probes"]
    return config
