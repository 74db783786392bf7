"""Where the server is and which token to send: the command line, else the environment, else defaults.

The token rule mirrors the service's (service/auth.py): `MNIST_TOKEN` when set, else the token the
service generated at first start into its state folder (`$MNIST_STATE_DIR/token`, default
`state/token`, relative to the folder the service was started from).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

URL_ENV = "MNIST_URL"
TOKEN_ENV = "MNIST_TOKEN"
STATE_DIR_ENV = "MNIST_STATE_DIR"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_STATE_DIR = "state"
TOKEN_FILE = "token"


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # "--token", "MNIST_TOKEN" or the file it was read from


def server_url(given: str | None, env: Mapping[str, str] = os.environ) -> str:
    """`--url`, else MNIST_URL, else the service's default address; without a trailing slash."""
    return (given or env.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def token_file(env: Mapping[str, str] = os.environ) -> Path:
    """The file the service keeps its generated token in."""
    return Path(env.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR) / TOKEN_FILE


def find_token(given: str | None, env: Mapping[str, str] = os.environ) -> Token | None:
    """`--token`, else MNIST_TOKEN, else the state folder's token file; None when there is none."""
    if given:
        return Token(given, "--token")
    if env.get(TOKEN_ENV):
        return Token(env[TOKEN_ENV], TOKEN_ENV)
    path = token_file(env)
    try:
        value = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return Token(value, str(path)) if value else None


def no_token_hint(env: Mapping[str, str] = os.environ) -> str:
    """What to do when no token was found, for the one-line error."""
    return f"no token found: pass --token, set {TOKEN_ENV}, or run where the service keeps {token_file(env)}"
