"""The one stored form of a moment, and every form stored before it still read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from registry import format_utc, parse_utc, utc_now

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "mnist"


def test_a_moment_is_written_in_utc_with_milliseconds() -> None:
    moment = datetime(2026, 11, 30, 5, 0, 0, 123456, tzinfo=UTC)
    assert format_utc(moment) == "2026-11-30T05:00:00.123Z"
    assert format_utc(moment.astimezone(timezone(timedelta(hours=2)))) == "2026-11-30T05:00:00.123Z"
    assert format_utc(moment.replace(tzinfo=None)) == "2026-11-30T05:00:00.123Z"  # naive: taken as UTC


def test_now_reads_the_clock_it_is_given() -> None:
    assert utc_now(lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"
    assert parse_utc(utc_now()) <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            "2026-11-30T05:28:23Z",
            datetime(2026, 11, 30, 5, 28, 23, tzinfo=UTC),
        ),  # manifests and pointers before
        ("2026-11-30T05:28:23.250Z", datetime(2026, 11, 30, 5, 28, 23, 250000, tzinfo=UTC)),  # job records
        ("2026-11-30T07:28:23+02:00", datetime(2026, 11, 30, 5, 28, 23, tzinfo=UTC)),
    ],
)
def test_every_form_stored_so_far_parses(stored: str, expected: datetime) -> None:
    assert parse_utc(stored) == expected


def test_the_shipped_manifests_written_in_whole_seconds_still_parse() -> None:
    for path in sorted(SHIPPED.glob("v*.json")):
        created = json.loads(path.read_text())["created_at"]
        assert format_utc(parse_utc(created)).replace(".000Z", "Z") == created


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_utc("yesterday")
