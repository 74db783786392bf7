"""The routing policy as a row beside the pointer row in PostgreSQL (cluster mode).

`model_policy` holds one row per model once a policy was first set; ending the experiment empties
the row's fields rather than deleting it, so its `generation` only ever grows and is a stamp every
process can compare (a deleted and re-made row could repeat a generation a process last saw).
Every change sends `NOTIFY model_pointer, '<model> policy <generation>'` on the pointer's own
channel: the listener that follows the pointer (registry.dbpointer.PointerListener) wakes the
same refresh, which reads both. The functions take a cursor inside the pointer registry's
transaction; `DatabasePointerRegistry` calls them.
"""

from __future__ import annotations

from typing import Any

from registry.errors import CorruptPolicy
from registry.policy import Policy, policy_from_fields
from registry.timestamps import format_utc

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_policy (
    model       text PRIMARY KEY,
    mode        text,
    version     text,
    percent     double precision,
    generation  bigint NOT NULL DEFAULT 0,
    updated_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"""


def read(cur: Any, model: str) -> Policy | None:
    cur.execute("SELECT * FROM model_policy WHERE model = %s", (model,))
    row = cur.fetchone()
    if row is None or row["mode"] is None:
        return None

    def corrupt(why: str) -> CorruptPolicy:
        return CorruptPolicy(f"the policy row of {model!r} is corrupt: {why}; set or end it to repair it")

    return policy_from_fields({**row, "updated_at": format_utc(row["updated_at"])}, corrupt)


def stamp(cur: Any, model: str) -> int | None:
    cur.execute("SELECT generation FROM model_policy WHERE model = %s", (model,))
    row = cur.fetchone()
    return None if row is None else int(row["generation"])


def write(cur: Any, channel: str, model: str, policy: Policy | None, who: str) -> None:
    """Set (or, with None, empty) the model's row, one generation on, and announce it."""
    mode, version, percent = (policy.mode, policy.version, policy.percent) if policy else (None, None, None)
    cur.execute(
        "INSERT INTO model_policy AS p (model, mode, version, percent, generation, updated_by) "
        "VALUES (%s, %s, %s, %s, 1, %s) ON CONFLICT (model) DO UPDATE SET mode = EXCLUDED.mode, "
        "version = EXCLUDED.version, percent = EXCLUDED.percent, generation = p.generation + 1, "
        "updated_by = EXCLUDED.updated_by, updated_at = now() RETURNING generation",
        (model, mode, version, percent, (policy.updated_by if policy else None) or who),
    )
    generation = cur.fetchone()["generation"]
    cur.execute("SELECT pg_notify(%s, %s)", (channel, f"{model} policy {generation}"))


def clear(cur: Any, channel: str, model: str, version: str | None, who: str) -> Policy | None:
    """End the experiment (only one naming `version`, when given), under the row's lock; returns it."""
    cur.execute("SELECT 1 FROM model_policy WHERE model = %s FOR UPDATE", (model,))
    try:
        stored = read(cur, model)
    except CorruptPolicy:
        stored = None
        if version is None:
            write(cur, channel, model, None, who)
    if stored is None or (version is not None and stored.version != version):
        return None
    write(cur, channel, model, None, who)
    return stored
