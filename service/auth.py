"""Bearer-token check for the endpoints that change state (train, cancel, promote, rollback).

With no token configured, one is generated at first start and kept in the state folder (mode
0600), so `docker compose up` needs no configuration and is still not open to anyone; it is
printed once, when it is created.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Forbidden, Unauthorized

log = logging.getLogger("service")
TOKEN_FILE = "token"

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


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Dependency: 401 without a bearer token, 403 with a wrong one (compared in constant time)."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
    expected: str = request.app.state.services.token
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Forbidden("the token was not accepted")


TokenRequired = Depends(require_token)
