"""A job's states are named once (trainer/job_states.py); the SQL of both job stores is built from them."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from service.jobs.store import JobStore
from trainer.job_states import ACTIVE_STATES, FINAL_STATES, STATES, sql_list

ROOT = Path(__file__).resolve().parents[2]
STORES = ("service/jobs/store.py", "trainer/cluster/store.py")


def test_the_states_split_into_active_and_final() -> None:
    assert set(ACTIVE_STATES) | set(FINAL_STATES) == set(STATES)
    assert not set(ACTIVE_STATES) & set(FINAL_STATES)
    assert sql_list(ACTIVE_STATES) == "('queued', 'running')"
    with pytest.raises(AssertionError):
        sql_list(["paused"])  # type: ignore[list-item]


@pytest.mark.parametrize("module", STORES)
def test_no_store_spells_a_state_list_by_hand_or_a_state_that_does_not_exist(module: str) -> None:
    source = (ROOT / module).read_text()
    assert not re.search(r"state\s+IN\s+\('", source), "a state list written by hand"
    named = set(re.findall(r"state\s*=\s*'(\w+)'", source))
    assert named and named <= set(STATES)


def test_the_sqlite_store_refuses_a_state_that_is_not_defined(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create({"preset": "fast"}, max_running=1, queue_size=1)
    with sqlite3.connect(store.path) as conn:
        for state in STATES:
            conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job.id))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE jobs SET state = 'paused' WHERE id = ?", (job.id,))
