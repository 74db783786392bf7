"""People's corrections of the model: the store both the service (writes) and the trainer (reads) use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from feedback.store import DB_FILE, FeedbackSample, FeedbackStore, FeedbackUnavailable, Retention

__all__ = ["DB_FILE", "FeedbackSample", "FeedbackStore", "FeedbackUnavailable", "Retention", "open_store"]


if TYPE_CHECKING:
    from feedback.pgstore import PgFeedbackStore


def open_store(
    state_dir: str | os.PathLike[str], database_url: str | None, retention: Retention | None = None
) -> FeedbackStore | PgFeedbackStore:
    """The store a service or a job uses: PostgreSQL in a cluster, else feedback.sqlite3 in `state_dir`."""
    if database_url:
        from feedback.pgstore import PgFeedbackStore  # psycopg only when a database is used

        return PgFeedbackStore(database_url, retention)
    return FeedbackStore(Path(state_dir) / DB_FILE, retention)
