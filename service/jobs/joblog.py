"""Each training job's own log file, written by its process and read back through GET /train/{id}/log.

The service's log interleaves every job with the requests; a person following one job (or finding
out why it failed) wants that job's lines alone: its data source, each evaluation, the phases after
training and how it ended. The file lives beside the job database (`<state>/jobs/<id>.log`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

LOG_FOLDER = "jobs"
MAX_LOG_BYTES = 1 << 20  # what GET /train/{id}/log returns at most: the end of a longer log
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FORMAT = "%(asctime)s %(levelname)s %(message)s"


def log_path(db_path: Path, job_id: str) -> Path:
    """Where job `job_id`'s log is; ValueError for an id the store could not have made."""
    if not JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id[:40]!r}")
    return Path(db_path).parent / LOG_FOLDER / f"{job_id}.log"


def attach(db_path: Path, job_id: str) -> logging.Handler:
    """Send the job process's records to its file as well, from INFO up whatever the service's level.

    Called once, in the job's process, after its console logging is set up: the console handlers
    keep the level they had, the root logger lets INFO through for the file.
    """
    path = log_path(db_path, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for existing in root.handlers:
        if existing.level == logging.NOTSET:
            existing.setLevel(root.getEffectiveLevel())
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    root.addHandler(handler)
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    return handler


def read(db_path: Path, job_id: str) -> str:
    """The job's log so far ("" before its process wrote anything); the last MAX_LOG_BYTES of it."""
    path = log_path(db_path, job_id)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - MAX_LOG_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
