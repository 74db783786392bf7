"""Bearer-token check for the endpoints that change state (train, cancel, promote, rollback).

With no token configured, one is generated at first start and kept in the state folder (mode
0600), so `docker compose up` needs no configuration and is still not open to anyone; it is
printed once, when it is created. In a cluster (MNIST_DATABASE_URL) it is kept in PostgreSQL
instead, so every replica accepts the same token and a new replica needs no configuration.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Forbidden, Unauthorized

log = logging.getLogger("service")
TOKEN_FILE = "token"
CLUSTER_SECRETS_LOCK = 0x746F6B65  # pg_advisory_xact_lock key: replicas starting at once

bearer = HTTPBearer(auto_error=False, description="The service token (see the log at first start).")


def load_or_create_token(state_dir: Path, configured: str | None) -> str:
    """The configured token, else the one stored in `state_dir`, else a new one (stored and logged)."""
    if configured:
        return configured
    path = state_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    # Written in full under a private name, then linked into place: link() refuses to replace an
    # existing file, so when several workers start at once exactly one token wins and none is
    # ever read half-written.
    tmp = state_dir / f".{TOKEN_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        tmp.unlink()
    log.warning(
        "generated an API token for mutating endpoints (kept in %s):\n\n    MNIST_TOKEN=%s\n", path, token
    )
    return token


def load_or_create_cluster_token(database_url: str) -> str:
    """A cluster's token, kept in PostgreSQL (table `cluster_secrets`): the first replica to start
    makes it (and logs it once); every other replica, now or later, reads the same one."""
    import psycopg

    token = secrets.token_urlsafe(24)
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLUSTER_SECRETS_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cluster_secrets "
            "(name text PRIMARY KEY, value text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        made = conn.execute(
            "INSERT INTO cluster_secrets (name, value) VALUES ('api_token', %s) ON CONFLICT DO NOTHING "
            "RETURNING value",
            (token,),
        ).fetchone()
        row = conn.execute("SELECT value FROM cluster_secrets WHERE name = 'api_token'").fetchone()
    assert row is not None  # inserted above, or by whoever won
    if made is not None:
        log.warning(
            "generated the cluster's API token for mutating endpoints (kept in PostgreSQL, table "
            "cluster_secrets; every replica uses it):\n\n    MNIST_TOKEN=%s\n",
            token,
        )
    return str(row[0])


def check_token(request: Request) -> None:
    """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
    expected: str = request.app.state.services.token
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("the token was not accepted")


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Dependency: declares the bearer scheme in the docs and checks the token (see `TokenFirstRoute`)."""
    check_token(request)


TokenRequired = Depends(require_token)


class TokenFirstRoute(APIRoute):
    """A route whose token, when it has `TokenRequired`, is checked before anything else.

    FastAPI parses and validates the body before it solves dependencies, so a token-protected
    route answered a malformed body with 422 before saying 401: a client without the token learnt
    what the route accepts. Here the token is checked first; the dependency stays declared (the
    docs' security scheme) and checks it again, which costs a header read.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not any(getattr(d, "dependency", None) is require_token for d in self.dependencies):
            return handler

        async def token_first(request: Request) -> Response:
            check_token(request)
            return await handler(request)

        return token_first
