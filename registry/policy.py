"""A model's routing policy: which version besides `current` sees traffic, and how.

Three modes, one candidate version each:

- `canary`: `percent` % of the requests that name no version are answered by the candidate, chosen
  at random per request; the rest by `current`;
- `sticky`: the same split, chosen by a hash of the client's key, so one client always gets the
  same version (the serving side decides what the key is);
- `shadow`: `percent` % of those requests are also computed by the candidate, off the response
  path, and compared; the candidate never answers.

It is stored beside the `current` pointer (a `policy` file next to the pointer file, a `policy`
object next to the `current` object, the `model_policy` row beside the `model_pointer` row in
PostgreSQL) and followed by every serving process the way the pointer is: by its stamp. On disk
it is JSON, `{"mode": "canary", "version": "v0003", "percent": 10.0, "updated_at": ...,
"updated_by": ...}`; no file (or `null`) is no policy. Parsed into this one typed object here and
nowhere else: anything else is a CorruptPolicy, never a half-understood one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from registry.errors import CorruptPolicy
from registry.pointer import is_version_name

MODES = ("canary", "sticky", "shadow")


@dataclass(frozen=True)
class Policy:
    mode: str  # one of MODES
    version: str  # the candidate
    percent: float  # 0..100: the candidate's share (canary, sticky) or the share shadowed (shadow)
    updated_at: str | None = None
    updated_by: str | None = None

    def __post_init__(self) -> None:
        problem = policy_problem(self.mode, self.version, self.percent)
        if problem is not None:
            raise ValueError(problem)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    def describe(self) -> str:
        """`canary v0003 at 10 %`: one line for logs, the CLI and the page."""
        return f"{self.mode} {self.version} at {self.percent:g} %"

    def same_experiment(self, other: Policy | None) -> bool:
        """Whether `other` is this policy's mode, version and share (when and by whom aside)."""
        return other is not None and (other.mode, other.version, other.percent) == (
            self.mode,
            self.version,
            self.percent,
        )


def policy_problem(mode: Any, version: Any, percent: Any) -> str | None:
    """What is wrong with these three fields, or None."""
    if mode not in MODES:
        return f'"mode" must be one of {", ".join(MODES)}, found {str(mode)[:20]!r}'
    if not is_version_name(version):
        return f'"version" must be a version name like "v0003", found {str(version)[:20]!r}'
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent):
        return f'"percent" must be a number from 0 to 100, found {str(percent)[:20]!r}'
    if not 0 <= percent <= 100:
        return f'"percent" must be from 0 to 100, found {percent}'
    return None


def parse_policy(data: bytes, model: str) -> Policy | None:
    """The policy in `data` (None for JSON `null`), or CorruptPolicy saying what is wrong with it."""

    def corrupt(why: str) -> CorruptPolicy:
        return CorruptPolicy(
            f"the routing policy of {model!r} is corrupt: {why}; set or end the policy to repair it"
        )

    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise corrupt(f"not valid JSON ({exc})") from None
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise corrupt('expected an object like {"mode": "canary", "version": "v0003", "percent": 10}')
    return policy_from_fields(raw, corrupt)


def policy_from_fields(raw: dict[str, Any], corrupt: Any) -> Policy:
    """A Policy from a stored record's fields (a file's JSON, a database row); `corrupt(why)`: the error."""
    problem = policy_problem(raw.get("mode"), raw.get("version"), raw.get("percent"))
    if problem is not None:
        raise corrupt(problem)
    updated_at, updated_by = raw.get("updated_at"), raw.get("updated_by")
    return Policy(
        raw["mode"],
        raw["version"],
        float(raw["percent"]),
        updated_at if isinstance(updated_at, str) else None,
        updated_by if isinstance(updated_by, str) else None,
    )
