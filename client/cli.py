"""The command line: parse, run one subcommand, turn any error into one line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from client import commands
from client.api import Api
from client.config import DEFAULT_URL, STATE_DIR_ENV, TOKEN_ENV, URL_ENV, find_token, server_url
from client.errors import BROKEN_PIPE, INTERRUPTED, ClientError
from client.train_options import add_train_options

DESCRIPTION = f"""\
Talk to the MNIST digit service: read digits, train, follow jobs, manage model versions
and the routing policy (canary, sticky, shadow).

The server is --url, else ${URL_ENV}, else {DEFAULT_URL}. The token for train, cancel,
promote, rollback and changing the routing policy is --token, else ${TOKEN_ENV}, else the
file the service keeps it in (${STATE_DIR_ENV}/token, default state/token).
"""
EPILOG = """\
exit status: 0 ok, 1 the server said no (its error in one line), 2 bad usage,
3 the server cannot be reached, 4 a job followed with --wait failed or was cancelled.
"""


def common_options(defaults: bool) -> argparse.ArgumentParser:
    """--url, --token, --json, --timeout: accepted before and after the subcommand.

    The subcommands' copies default to SUPPRESS, so that a value given before the subcommand is
    not overwritten by the subcommand's default.
    """
    parser = argparse.ArgumentParser(add_help=False)
    default = (lambda value: value) if defaults else (lambda _: argparse.SUPPRESS)
    parser.add_argument(
        "--url", default=default(None), help=f"the service (env {URL_ENV}; default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token", default=default(None), help=f"API token (env {TOKEN_ENV}; else state/token)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the answer as JSON"
    )
    parser.add_argument(
        "--timeout", type=float, default=default(30.0), metavar="S", help="seconds to wait for an answer (30)"
    )
    return parser


def wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="follow the job with a progress bar until it ends"
    )
    parser.add_argument("--no-progress", action="store_true", help="with --wait: no progress bar")


def build_parser(prog: str = "mnist") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        parents=[common_options(defaults=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [common_options(defaults=False)]

    def command(name: str, run: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        child = sub.add_parser(name, parents=common, help=help_text, description=help_text)
        child.set_defaults(run=run)
        return child

    predict = command("predict", commands.predict, "read the digit in each image file")
    predict.add_argument("files", nargs="+", metavar="FILE", help="PNG, JPEG, GIF, BMP or WebP images")
    predict.add_argument("--version", help="the model version to ask (default: the current one)")

    train = command(
        "train", commands.train, "start a training job (prints its id, or follows it with --wait)"
    )
    add_train_options(train)
    wait_options(train)

    command("jobs", commands.jobs, "list training jobs, newest first").add_argument(
        "--limit", type=int, default=20, help="at most this many (default 20)"
    )
    job = command("job", commands.job, "show one training job")
    job.add_argument("id", help="the job id (from train or jobs)")
    wait_options(job)
    command("cancel", commands.cancel, "cancel a queued or running job").add_argument("id", help="the job id")
    command("models", commands.models, "list model versions (* marks the current one)")
    command("promote", commands.promote, "make a version current").add_argument("version", help="e.g. v0002")
    command("rollback", commands.rollback, "make the previously current version current again")
    add_policy(sub, common)
    command(
        "ready", commands.ready, "check that the service is ready to answer (a model is loaded)"
    ).add_argument("--wait", type=float, default=0.0, metavar="S", help="keep trying for up to S seconds")
    command("token", commands.token, "print the API token this client would send")
    return parser


def add_policy(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """`policy show | set MODE VERSION [--percent N] | end | promote`: GET, PUT, DELETE /models/policy
    and POST /models/policy/promote."""
    help_text = "the routing policy: a canary, sticky or shadow version beside the current one"
    parser = sub.add_parser("policy", parents=common, help=help_text, description=help_text)
    parser.set_defaults(run=commands.policy)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=common, help=help_text, description=help_text)

    action("show", "the policy, who set it, and what the worker that answered saw under it")
    setting = action(
        "set",
        "route a share of requests to VERSION (canary: at random; sticky: by client) or have it compute "
        "them in the shadow; it must exist, load and not be current",
    )
    setting.add_argument("mode", choices=("canary", "sticky", "shadow"))
    setting.add_argument("version", help="the candidate, e.g. v0003")
    setting.add_argument(
        "--percent", type=share, help="0..100: the candidate's share (canary, sticky: required; shadow: 100)"
    )
    action("end", "end the experiment (every request to the current version) and print its final figures")
    action("promote", "make the policy's version current and end the experiment")


def share(text: str) -> float:
    """An argparse type: a percentage from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 100, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be from 0 to 100, got {text}")
    return value


def main(argv: Sequence[str] | None = None, prog: str = "mnist") -> int:
    """Run one command; returns the exit status (argparse exits with 2 by itself on bad usage)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "policy" and args.action == "set" and args.mode != "shadow" and args.percent is None:
        parser.error(f"policy set {args.mode} needs --percent (the candidate's share, 0..100)")
    try:
        if args.command == "token":
            return args.run(args)
        with Api(server_url(args.url), find_token(args.token), args.timeout) as api:
            return args.run(args, api)
    except ClientError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`mnist jobs | head -1`): not an error worth a traceback. Python would
        # complain again when it flushes stdout at exit, so stdout is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
