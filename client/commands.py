"""One function per subcommand: ask the service, print the answer (a table, or JSON with --json).

Each returns the exit code; errors are raised as `client.errors` and reported by `client.cli`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from client import render
from client.api import Api
from client.config import find_token, no_token_hint
from client.errors import INTERRUPTED, OK, JobEnded, ServerRefused, Unreachable, UsageError
from client.follow import follow
from client.train_options import train_body

READY_POLL_S = 0.2


def show(args: argparse.Namespace, value: Any, text: str) -> None:
    print(render.as_json(value) if args.json else text)


def predict(args: argparse.Namespace, api: Api) -> int:
    paths = [Path(p) for p in args.files]
    answers = api.predict(paths, args.version)
    answered = [(answer["version"], item) for answer in answers for item in answer["predictions"]]
    items = [
        {"path": str(path), **item, "version": version}
        for path, (version, item) in zip(paths, answered, strict=True)
    ]
    if args.json:
        print(render.as_json({"model": answers[0]["model"], "predictions": items}))
    else:
        print(render.predictions(items))
    return OK


def train(args: argparse.Namespace, api: Api) -> int:
    record = api.submit(train_body(args))
    if not args.wait:
        show(
            args,
            record,
            f"job {record['id']} {record['state']}; follow it with: mnist job {record['id']} --wait",
        )
        return OK
    return watch(args, api, record["id"])


def job(args: argparse.Namespace, api: Api) -> int:
    if not args.wait:
        record = api.job(args.id)
        show(args, record, render.job(record))
        return OK
    return watch(args, api, args.id)


def watch(args: argparse.Namespace, api: Api, job_id: str) -> int:
    """Follow a job to its end; Ctrl-C stops following, not the job."""
    try:
        record = follow(api, job_id, show=not args.no_progress)
    except KeyboardInterrupt:
        print(
            f"stopped following job {job_id}; it goes on (stop it with: mnist cancel {job_id})",
            file=sys.stderr,
        )
        return INTERRUPTED
    return finish(args, api, record)


def finish(args: argparse.Namespace, api: Api, record: dict[str, Any]) -> int:
    """After --wait: the outcome in one line (or the record as JSON); a failed or cancelled job is exit 4."""
    if args.json:
        print(render.as_json(record))
    if record["state"] != "succeeded":
        raise JobEnded(f"job {record['id']} {record['state']}: {record.get('error') or 'no reason given'}")
    if not args.json:
        version = record["version"]
        accuracy = api.manifest(version).get("test_accuracy")
        where = (
            "now current"
            if record["promoted"]
            else f"a candidate; make it current with: mnist promote {version}"
        )
        print(f"job {record['id']} succeeded: {version}, test accuracy {render.percent(accuracy)} ({where})")
    return OK


def jobs(args: argparse.Namespace, api: Api) -> int:
    records = api.jobs(args.limit)
    show(args, {"jobs": records}, render.jobs(records))
    return OK


def cancel(args: argparse.Namespace, api: Api) -> int:
    status, record = api.cancel(args.id)
    text = f"job {record['id']} {record['state']}"
    if status == 202:
        text += " (still stopping; it will end cancelled)"
    show(args, record, text)
    return OK


def models(args: argparse.Namespace, api: Api) -> int:
    listing = api.models()
    show(args, listing, render.models(listing))
    return OK


def promote(args: argparse.Namespace, api: Api) -> int:
    move = api.promote(args.version)
    show(args, move, render.pointer_move(move))
    return OK


def rollback(args: argparse.Namespace, api: Api) -> int:
    move = api.rollback()
    show(args, move, render.pointer_move(move))
    return OK


def policy(args: argparse.Namespace, api: Api) -> int:
    """show | set MODE VERSION [--percent N] | end | promote, as `python -m trainer policy` but over HTTP."""
    if args.action == "show":
        view = api.policy()
        show(args, view, render.policy_view(view))
    elif args.action == "set":
        view = api.set_policy(args.mode, args.version, args.percent)
        assert view["policy"] is not None  # the service answers with the policy it stored
        show(args, view, f"{view['model']}: routing policy set: {render.policy(view['policy'])}")
    elif args.action == "end":
        answer = api.end_policy()
        show(args, answer, render.policy_ended(answer))
    else:  # promote
        move = api.promote_policy()
        show(args, move, render.pointer_move(move))
    return OK


def ready(args: argparse.Namespace, api: Api) -> int:
    """Ready now, or (with --wait S) as soon as it is within S seconds; the last refusal otherwise."""
    deadline = time.monotonic() + args.wait
    while True:
        try:
            answer = api.ready()
        except (ServerRefused, Unreachable):
            if time.monotonic() >= deadline:
                raise
            time.sleep(READY_POLL_S)
            continue
        show(args, answer, f"ready: {answer['model']} {answer['version']}")
        return OK


def token(args: argparse.Namespace) -> int:
    """Print the token the client would send (no server involved)."""
    found = find_token(args.token)
    if found is None:
        raise UsageError(no_token_hint())
    show(args, {"token": found.value, "source": found.source}, found.value)
    return OK
