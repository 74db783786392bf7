"""`python -m trainer policy`: a model's routing policy (canary, sticky, shadow) on the registry itself.

Like `promote`, it works on the registry directly (a folder, object storage, or a cluster's row
in PostgreSQL with `--database-url`), with the same rules as `PUT /models/policy` and `POST
/models/policy/promote` (registry.candidate); every serving process follows the change by itself.
The live figures of an experiment are each serving process's own (`GET /models/policy`, `/metrics`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from registry import (
    BaseRegistry,
    CorruptPointer,
    CorruptPolicy,
    Policy,
    RegistryError,
    parse_version,
    promote_candidate,
    start_policy,
    utc_now,
)
from trainer.commands import UserFacingError, print_ended, registry_of

SHADOW_PERCENT = 100.0  # a shadow computes every request unless told otherwise, as the API's default


def policy_command(args: argparse.Namespace, _: None) -> int:
    """show | set MODE VERSION [--percent N] | end | promote."""
    registry = registry_of(args, "mnist")
    try:
        if args.action == "show":
            return show(registry, args.json)
        if args.action == "set":
            percent = SHADOW_PERCENT if args.percent is None else args.percent
            who = f"trainer@{socket.gethostname()} pid {os.getpid()}"
            policy = Policy(args.mode, parse_version(args.version), percent, utc_now(), who)
            start_policy(registry, policy)
            print(f"{registry.model}: routing policy set: {policy.describe()}")
        elif args.action == "end":
            ended = registry.clear_policy()
            print(
                f"{registry.model}: " + (f"ended {ended.describe()}" if ended else "no routing policy to end")
            )
        else:  # promote
            move = promote_candidate(registry)
            was = f" (was {move.previous})" if move.previous else ""
            print(f"{registry.model}: current is now {move.current}{was}")
            print_ended(move)
    except RegistryError as exc:
        raise UserFacingError(str(exc)) from exc
    return 0


def show(registry: BaseRegistry, as_json: bool) -> int:
    """The current version and the policy beside it (a damaged policy: a warning, and none applies)."""
    try:
        current = registry.current()
    except CorruptPointer:
        current = None
    try:
        policy, problem = registry.policy(), None
    except CorruptPolicy as exc:
        policy, problem = None, str(exc)
    if as_json:
        record = {
            "model": registry.model,
            "current": current,
            "policy": policy.to_dict() if policy else None,
            "policy_error": problem,
        }
        print(json.dumps(record, indent=1))
        return 0
    if problem is not None:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{registry.model}: current {current or 'none'}")
    if policy is None:
        print("routing policy: none")
        return 0
    print(f"routing policy: {policy.describe()}")
    print(f"set {policy.updated_at or 'at an unknown time'} by {policy.updated_by or 'unknown'}")
    return 0


def percent(text: str) -> float:
    """An argparse type: a share from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 100, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be from 0 to 100, got {text}")
    return value
