"""The server's answers as text for a person: aligned tables and short lines (`--json` bypasses this)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns numbered in `right` are right-aligned."""
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def percent(value: float | None, places: int = 2) -> str | None:
    return None if value is None else f"{100 * value:.{places}f} %"


def duration(seconds: float | None) -> str | None:
    """12 s, 3:05, 1:02:03."""
    if seconds is None:
        return None
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def predictions(items: Sequence[dict[str, Any]]) -> str:
    """One row per file: the digit, its probability, the digit score, the version that answered."""
    rows = [
        (item["path"], item["digit"], percent(item["confidence"]), item.get("digit_score"), item["version"])
        for item in items
    ]
    return table(("FILE", "DIGIT", "CONFIDENCE", "DIGIT SCORE", "VERSION"), rows, right=(1, 2, 3))


def progress_summary(progress: dict[str, Any], running: bool) -> str:
    """`epoch 2/5, 40 %, accuracy 97.10 %, ETA 12 s` from a job's progress (the parts it has)."""
    parts = []
    if progress.get("phase"):
        parts.append(str(progress["phase"]))
    if progress.get("epochs"):
        parts.append(f"epoch {progress.get('epoch', 0)}/{progress['epochs']}")
    if progress.get("percent") is not None:
        parts.append(f"{progress['percent']:.0f} %")
    if progress.get("accuracy") is not None:
        parts.append(f"accuracy {percent(progress['accuracy'])}")
    if running and progress.get("eta_seconds") is not None:
        parts.append(f"ETA {duration(progress['eta_seconds'])}")
    return ", ".join(parts)


def jobs(records: Sequence[dict[str, Any]]) -> str:
    if not records:
        return "no training jobs yet"
    rows = [
        (
            job["id"],
            job["state"],
            job["params"].get("preset"),
            job["version"],
            progress_summary(job["progress"], running=True)
            if job["state"] == "running"
            else job.get("error") or "",
            job["created_at"],
        )
        for job in records
    ]
    return table(("ID", "STATE", "PRESET", "VERSION", "PROGRESS / ERROR", "CREATED"), rows)


def job(record: dict[str, Any]) -> str:
    """A job's record, one field a line."""
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in record["params"].items())
    fields = [
        ("job", record["id"]),
        ("state", record["state"]),
        ("params", params),
        ("progress", progress_summary(record["progress"], running=record["state"] == "running")),
        (
            "version",
            record["version"] and f"{record['version']}{' (promoted)' if record['promoted'] else ''}",
        ),
        ("error", record["error"]),
        ("created", record["created_at"]),
        ("started", record["started_at"]),
        ("finished", record["finished_at"]),
    ]
    return "\n".join(f"{name + ':':10}{value}" for name, value in fields if value)


def models(listing: dict[str, Any]) -> str:
    rows = [
        (
            ("* " if info["current"] else "  ") + info["version"],
            percent(info["test_accuracy"]),
            "-".join(str(n) for n in info["sizes"]) or None,
            info["preset"],
            info["parent"],
            info["created_at"],
        )
        if not info.get("damaged")
        else ("  " + info["version"], None, None, None, None, f"damaged: {info['damaged']}")
        for info in listing["versions"]
    ]
    lines = [table(("  VERSION", "TEST ACC", "SIZES", "PRESET", "PARENT", "CREATED"), rows, right=(1,))]
    if not rows:
        lines = [f"model {listing['model']} has no versions yet"]
    current = listing.get("current")
    lines.append(f"current: {current}" if current else "current: none")
    if listing.get("pointer_error"):
        lines.append(f"pointer error: {listing['pointer_error']}")
    if listing.get("policy"):
        lines.append(f"routing policy: {policy(listing['policy'])}")
    if listing.get("policy_error"):
        lines.append(f"policy error: {listing['policy_error']}")
    return "\n".join(lines)


def policy(record: dict[str, Any]) -> str:
    """`canary v0003 at 10 %`, as the service logs it."""
    return f"{record['mode']} {record['version']} at {record['percent']:g} %"


def pointer_move(move: dict[str, Any]) -> str:
    was = move.get("previous")
    text = f"{move['model']}: {move['current']} is current{f' (was {was})' if was else ''}"
    if move.get("ended"):
        text += f"; the routing policy ({policy(move['ended'])}) ended with it"
    if move.get("final"):
        text += "\n" + figures(move["final"])
    return text


def policy_view(view: dict[str, Any]) -> str:
    """GET /models/policy: the current version, the policy and who set it, and its live figures."""
    lines = [f"{view['model']}: current {view['current'] or 'none'}"]
    if view.get("policy_error"):
        lines.append(f"policy error: {view['policy_error']} (applied as none; `mnist policy end` clears it)")
    record = view.get("policy")
    if record is None:
        lines.append("routing policy: none")
    else:
        lines.append(f"routing policy: {policy(record)}")
        lines.append(
            f"set {record['updated_at'] or 'at an unknown time'} by {record['updated_by'] or 'unknown'}"
        )
    if view.get("live"):
        lines.append(figures(view["live"]))
    elif view.get("ended"):
        lines.append(figures(view["ended"]))
    return "\n".join(lines)


def policy_ended(answer: dict[str, Any]) -> str:
    """DELETE /models/policy: what ended, and its final figures in the worker that answered."""
    if answer["ended"] is None:
        return f"{answer['model']}: no routing policy to end"
    text = f"{answer['model']}: ended {policy(answer['ended'])}"
    return text + ("\n" + figures(answer["final"]) if answer.get("final") else "")


def figures(live: dict[str, Any]) -> str:
    """An experiment's figures per version and role (`live`, or `final` once it ended) as a table."""
    since = live.get("since") or "?"
    if live.get("ended_at"):
        ended = f"{policy(live['policy'])}, ended {live['ended_at']}"
        head = f"{ended}: final figures of worker pid {live['pid']}, from {since}"
    else:
        head = f"live figures of worker pid {live['pid']} (each worker counts its own), since {since}"
    rows = [
        (
            row["version"],
            row["role"],
            row["requests"],
            None if row["mean_latency_ms"] is None else f"{row['mean_latency_ms']:.2f} ms",
            percent(row["mean_confidence"]),
            percent(row["agreement"]),
            row["dropped"],
            " ".join(str(n) for n in row["digits"]),
        )
        for row in live["versions"]
    ]
    if not rows:
        return f"{head}: no requests yet"
    header = ("VERSION", "ROLE", "REQUESTS", "LATENCY", "CONFIDENCE", "AGREEMENT", "DROPPED", "DIGITS 0-9")
    return f"{head}\n" + table(header, rows, right=(2, 3, 4, 5, 6))
