"""The service with its `current` pointer in PostgreSQL (MNIST_DATABASE_URL, a real server): a row
moved without a NOTIFY is still followed by the watcher, a promote records which process did it,
and a database that does not answer is a 503 with Retry-After while the loaded version keeps serving."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from conftest import AUTH, MakeClient, Publish

from tests.testkit import free_port


def wait_for(check: Any, deadline_s: float = 5.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {deadline_s} s")


def test_a_row_moved_without_notify_is_followed_by_the_watcher(
    make_client: MakeClient, publish: Publish, database_url: str
) -> None:
    v1 = publish()  # promoted in the folder's pointer: the row starts as a copy of it
    v2 = publish(promote=False)
    with make_client(database_url=database_url, reload_interval_s=0.1) as client:
        ready = client.get("/readyz").json()
        assert ready == {"status": "ready", "model": "mnist", "version": v1, "generation": 0}
        with psycopg.connect(database_url, autocommit=True) as conn:  # an UPDATE, and no NOTIFY
            conn.execute("UPDATE model_pointer SET version = %s, generation = 7 WHERE model = 'mnist'", (v2,))

        def moved() -> bool:
            return client.get("/readyz").json().get("generation") == 7

        wait_for(moved)
        assert client.get("/readyz").json()["version"] == v2


def test_a_promote_through_the_api_is_logged_with_the_process_that_made_it(
    make_client: MakeClient, publish: Publish, database_url: str
) -> None:
    v1 = publish()
    v2 = publish(promote=False)
    with make_client(database_url=database_url) as client:
        response = client.post(f"/models/{v2}/promote", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json() == {"model": "mnist", "current": v2, "previous": v1, "ended": None}
        assert client.get("/readyz").json()["generation"] == 1
        with psycopg.connect(database_url) as conn:
            action, version, who = conn.execute(
                "SELECT action, version, updated_by FROM model_pointer_log ORDER BY id DESC LIMIT 1"
            ).fetchone()
        assert (action, version) == ("promote", v2) and who.startswith("service@")


def test_a_database_that_does_not_answer_is_a_503_with_retry_after(
    make_client: MakeClient, publish: Publish
) -> None:
    publish()
    v2 = publish(promote=False)
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/mnist"
    with make_client(database_url=dead) as client:
        assert client.get("/readyz").status_code == 503  # it cannot know what to serve
        response = client.post(f"/models/{v2}/promote", headers=AUTH)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "registry_unavailable"
        assert "PostgreSQL did not answer" in response.json()["detail"]
        assert response.headers["Retry-After"] == "2"
        assert client.get(f"/models/{v2}").status_code == 200  # the files are still readable
        jobs = client.get("/train")
        assert jobs.status_code == 503 and jobs.json()["error"] == "jobs_unavailable", jobs.text
        assert client.get("/metrics").status_code == 200


def test_without_a_configured_token_the_cluster_keeps_one_in_the_database(
    make_client: MakeClient, publish: Publish, database_url: str, tmp_path
) -> None:
    """Two replicas with their own state folders and no MNIST_TOKEN accept the same token."""
    publish()
    v2 = publish(promote=False)
    first = make_client(token=None, database_url=database_url, state_dir=tmp_path / "state-a")
    second = make_client(token=None, database_url=database_url, state_dir=tmp_path / "state-b")
    with first, second:
        with psycopg.connect(database_url) as conn:
            [token] = conn.execute("SELECT value FROM cluster_secrets WHERE name = 'api_token'").fetchone()
        auth = {"Authorization": f"Bearer {token}"}
        assert (
            first.post(f"/models/{v2}/promote", headers={"Authorization": "Bearer wrong"}).status_code == 403
        )
        assert second.post(f"/models/{v2}/promote", headers=auth).status_code == 200
        assert first.post("/models/rollback", headers=auth).status_code == 200
    assert not (tmp_path / "state-a" / "token").exists()  # nothing secret left in a replica's folder


def test_the_token_command_prints_the_cluster_s_token(
    make_client: MakeClient, publish: Publish, database_url: str, tmp_path
) -> None:
    """`python -m service token` on a replica host prints the token kept in PostgreSQL, not one of
    its own state folder (which no replica would accept)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    publish()
    with (
        make_client(token=None, database_url=database_url, state_dir=tmp_path / "state-a"),
        psycopg.connect(database_url) as conn,
    ):
        [token] = conn.execute("SELECT value FROM cluster_secrets WHERE name = 'api_token'").fetchone()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_")}
    env.update(MNIST_DATABASE_URL=database_url, MNIST_STATE_DIR=str(tmp_path / "state-b"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    printed = subprocess.run(
        [sys.executable, "-m", "service", "token"], env=env, capture_output=True, text=True, check=True
    )
    assert printed.stdout == f"{token}\n"
    assert not (tmp_path / "state-b" / "token").exists()
