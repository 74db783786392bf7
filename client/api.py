"""The service's HTTP API as Python calls: one method per operation, errors as `client.errors`.

Every answer is the server's JSON as it came; the callers decide how to show it.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from client.config import Token, no_token_hint
from client.errors import ServerRefused, Unreachable, UsageError

FILES_PER_REQUEST = 8  # the service takes at most 8 images of the largest size in one request


class Api:
    """A connection to one service. Use as a context manager (it holds a connection pool)."""

    def __init__(self, url: str, token: Token | None, timeout_s: float = 30.0):
        self.url, self.token = url, token
        try:
            self.http = httpx.Client(
                base_url=url, timeout=timeout_s, headers={"User-Agent": "mnist-client"}, trust_env=False
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise UsageError(f"bad server URL {url!r}: {exc}") from None

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.http.close()

    # -- the operations ---------------------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        """/readyz: raises ServerRefused (503) until a model is loaded."""
        return self.call("GET", "/readyz").json()

    def predict(self, paths: Sequence[Path], version: str | None = None) -> list[dict[str, Any]]:
        """One answer per group of up to FILES_PER_REQUEST files, in order (multipart `file` parts).

        Every file is read before the first is sent: a missing one is a usage error, not half an answer.
        """
        parts = [("file", (path.name, read_file(path), media_type(path))) for path in paths]
        answers = []
        for start in range(0, len(parts), FILES_PER_REQUEST):
            files = parts[start : start + FILES_PER_REQUEST]
            params = {"version": version} if version else None
            answers.append(self.call("POST", "/predict", files=files, params=params).json())
        return answers

    def submit(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/train", json=params, auth=True).json()

    def jobs(self, limit: int) -> list[dict[str, Any]]:
        return self.call("GET", "/train", params={"limit": limit}).json()["jobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/train/{job_id}").json()

    def cancel(self, job_id: str) -> tuple[int, dict[str, Any]]:
        """(status, record): 200 when it stopped, 202 while it is still stopping."""
        response = self.call("DELETE", f"/train/{job_id}", auth=True)
        return response.status_code, response.json()

    def models(self) -> dict[str, Any]:
        return self.call("GET", "/models").json()

    def manifest(self, version: str) -> dict[str, Any]:
        return self.call("GET", f"/models/{version}").json()

    def promote(self, version: str) -> dict[str, Any]:
        return self.call("POST", f"/models/{version}/promote", auth=True).json()

    def rollback(self) -> dict[str, Any]:
        return self.call("POST", "/models/rollback", auth=True).json()

    def policy(self) -> dict[str, Any]:
        """The routing policy, and what the worker that answered saw under it (`live`)."""
        return self.call("GET", "/models/policy").json()

    def set_policy(self, mode: str, version: str, percent: float | None) -> dict[str, Any]:
        """Set it; without `percent` the service's default (shadow: 100; canary, sticky: a 422)."""
        body: dict[str, Any] = {"mode": mode, "version": version}
        if percent is not None:
            body["percent"] = percent
        return self.call("PUT", "/models/policy", json=body, auth=True).json()

    def end_policy(self) -> dict[str, Any]:
        return self.call("DELETE", "/models/policy", auth=True).json()

    def promote_policy(self) -> dict[str, Any]:
        return self.call("POST", "/models/policy/promote", auth=True).json()

    # -- the one place requests are made ------------------------------------------------------------

    def call(self, method: str, path: str, *, auth: bool = False, **options: Any) -> httpx.Response:
        """Send one request; an error status raises ServerRefused, no answer at all Unreachable."""
        headers = {"Authorization": f"Bearer {self.token.value}"} if auth and self.token else None
        try:
            response = self.http.request(method, path, headers=headers, **options)
        except httpx.UnsupportedProtocol:
            raise UsageError(f"bad server URL {self.url!r}: it must start with http:// or https://") from None
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the service at {self.url}: {exc or type(exc).__name__}"
            ) from None
        if response.is_error:
            hint = no_token_hint() if auth and self.token is None and response.status_code == 401 else ""
            raise ServerRefused.from_response(response, hint)
        return response


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def media_type(path: Path) -> str:
    """The part's type from the file name; the service reads the bytes, the name is a hint."""
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed if guessed and guessed.startswith("image/") else "application/octet-stream"
