"""One way to write a moment for everything the project stores: manifests, pointers, job records.

ISO 8601 in UTC with milliseconds and a `Z`, e.g. `2026-11-30T05:00:00.123Z`, which sorts as text.
What was stored before in whole seconds (`2026-11-30T05:00:00Z`, the manifests and pointers of
earlier versions) still parses, as does any other ISO 8601 form with an offset.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]  # an aware datetime for "now"; tests pass a fake one


def system_clock() -> datetime:
    return datetime.now(UTC)


def format_utc(moment: datetime) -> str:
    """`moment` (aware; a naive one is taken as UTC) in the one stored form."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now(clock: Clock = system_clock) -> str:
    """Now, by `clock`, in the one stored form."""
    return format_utc(clock())


def parse_utc(text: str) -> datetime:
    """A stored moment back as an aware datetime, whichever form wrote it; ValueError if none did."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
