"""The states of a training job, named once for the job records of both runners.

The embedded store (service/jobs/store.py, SQLite) and the cluster's (trainer/cluster/store.py,
PostgreSQL) build the state lists of their SQL (constraints, indexes, `IN (...)`) from these
tuples, and the API and metrics read them, so a state is added or renamed here and nowhere else.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Literal

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATES: tuple[JobState, ...] = typing.get_args(JobState)
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")  # counted against the queue's places
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")


def sql_list(states: Iterable[JobState]) -> str:
    """`('queued', 'running')`: a state list for SQL text (constants of this module, never input)."""
    names = tuple(states)
    assert names and set(names) <= set(STATES), names
    return "(" + ", ".join(f"'{name}'" for name in names) + ")"
