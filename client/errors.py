"""What can go wrong, each with the exit code a script can test and a one-line message.

0 ok, 1 the server said no (a 4xx or 5xx answer), 2 bad usage (argparse's own code too),
3 the server cannot be reached, 4 a followed job ended failed or cancelled. As for any command,
130 after Ctrl-C and 141 when the reader of the output went away (`mnist jobs | head -1`).
"""

from __future__ import annotations

import re

import httpx

OK, REFUSED, USAGE, UNREACHABLE, JOB_FAILED = 0, 1, 2, 3, 4
INTERRUPTED, BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE: what a shell reports


def one_line(text: object, limit: int = 400) -> str:
    """`text` with every run of whitespace made one space, cut at `limit` characters."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class ClientError(Exception):
    """An error the command line reports in one line and turns into its exit code."""

    exit_code = REFUSED

    def __init__(self, message: str):
        super().__init__(one_line(message))


class UsageError(ClientError):
    """The command line itself is wrong (a missing file, a bad URL, no token to be found)."""

    exit_code = USAGE


class Unreachable(ClientError):
    """No HTTP answer at all: refused connection, unknown host, timeout."""

    exit_code = UNREACHABLE


class JobEnded(ClientError):
    """A job followed with --wait ended failed or cancelled."""

    exit_code = JOB_FAILED


class ServerRefused(ClientError):
    """The server answered with an error status; its JSON body `{"error", "detail"}` becomes the message."""

    exit_code = REFUSED

    def __init__(self, status: int, code: str, detail: str, hint: str = ""):
        self.status, self.code, self.detail = status, code, detail
        super().__init__(f"{detail} (HTTP {status} {code}){' ' + hint if hint else ''}")

    @classmethod
    def from_response(cls, response: httpx.Response, hint: str = "") -> ServerRefused:
        """Read the service's error body; anything else (a proxy's HTML page, say) is summarised."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "error" in body:
            return cls(response.status_code, str(body["error"]), one_line(body.get("detail", "")), hint)
        text = one_line(response.text, 200) or response.reason_phrase
        return cls(response.status_code, "http_error", text, hint)
