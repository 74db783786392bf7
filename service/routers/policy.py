"""The routing policy over HTTP: set, read, promote its version, end it (`/models/policy`).

The policy (registry.policy) is stored beside the `current` pointer, so every worker and replica
applies it within `MNIST_RELOAD_INTERVAL_S` (at once in a cluster, through NOTIFY); the process
that answers the request applies it before it answers. Setting one checks that its version exists
(404), is not the current one (409 `already_current`), and loads, validates and warms up (409
`corrupt_version`): a candidate that could not answer is never routed to. Promoting it is the
ordinary promote (the same checks), then the end of the experiment.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field

from registry import CorruptPointer, CorruptPolicy, Policy, parse_version, utc_now
from service.auth import TokenFirstRoute, TokenRequired
from service.errors import error_responses
from service.state import AppState, State

router = APIRouter(prefix="/models", tags=["models"], route_class=TokenFirstRoute)

SHADOW_WAIT_S = 1.0  # ending an experiment waits this long at most for the shadow's queued rows


VERSION = Field(max_length=16, description="The candidate, by its name exactly as listed: v0003.")
PERCENT_DOC = "0..100: the candidate's share of the requests that name no version"


class SplitIn(BaseModel):
    """canary: `percent` % of requests, drawn at random, go to `version`; sticky: the same share, chosen
    by a hash of the client's `X-Client-Id` header (else its address): a client keeps its version."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["canary", "sticky"]
    version: str = VERSION
    percent: float = Field(ge=0, le=100, allow_inf_nan=False, description=PERCENT_DOC + ".")


class ShadowIn(BaseModel):
    """shadow: `version` also computes `percent` % of requests after the answer and is compared with
    the current version; it never answers."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["shadow"]
    version: str = VERSION
    percent: float = Field(
        100, ge=0, le=100, allow_inf_nan=False, description=PERCENT_DOC + " that it also computes."
    )


PolicyIn = Annotated[SplitIn | ShadowIn, Body(discriminator="mode")]


class PolicyOut(BaseModel):
    mode: str
    version: str
    percent: float
    updated_at: str | None
    updated_by: str | None


class LiveVersion(BaseModel):
    version: str
    role: str = Field(description="current, canary (answered in the candidate's share) or shadow (computed).")
    requests: int = Field(description="Requests answered (current, canary) or computed (shadow).")
    mean_latency_ms: float | None = Field(
        description="current, canary: request to answer; shadow: the network pass that computed it."
    )
    mean_confidence: float | None = Field(description="Mean probability of the predicted digit.")
    digits: list[int] = Field(description="How many times each digit 0..9 was predicted.")
    agreement: float | None = Field(description="shadow: the share of digits read the same as current.")
    compared: int | None = Field(description="shadow: digits compared with current.")
    dropped: int | None = Field(description="shadow: digits not computed because its queue was full.")


class PolicyLive(BaseModel):
    policy: PolicyOut = Field(description="The experiment these figures are of, as this process applied it.")
    scope: str = Field(description="Whose figures these are: the process that answered, since when.")
    pid: int
    since: str | None = Field(description="When this process began applying it.")
    ended_at: str | None = Field(
        None,
        description="When this process stopped applying it (ended, promoted, replaced); null while live.",
    )
    versions: list[LiveVersion]


class PolicyView(BaseModel):
    model: str
    current: str | None = Field(description="The current version (the rest of the traffic goes there).")
    policy: PolicyOut | None = Field(description="The routing policy; null when none is set.")
    policy_error: str | None = Field(
        None, description="Why the stored policy cannot be used (it applies as none); ending it repairs it."
    )
    live: PolicyLive | None = Field(
        None,
        description="What the process that answered saw since it began applying the policy (each worker "
        "and replica keeps its own; /metrics has them all); null when it applies none.",
    )
    ended: PolicyLive | None = Field(
        None,
        description="The last experiment the process that answered stopped applying, with its final figures "
        "and when it ended (kept in its memory until another ends); null when none has yet.",
    )


FINAL = Field(
    None,
    description="The experiment's final figures in the process that answered (what `live` showed, to its "
    "end); null when that process did not apply it.",
)


class PolicyEnded(BaseModel):
    model: str
    ended: PolicyOut | None = Field(description="The policy that ended; null when there was none.")
    final: PolicyLive | None = FINAL


class PolicyPromoted(BaseModel):
    model: str
    current: str
    previous: str | None = Field(description="The version current before; null if the candidate already was.")
    ended: PolicyOut
    final: PolicyLive | None = FINAL


def out(policy: Policy | None) -> PolicyOut | None:
    return None if policy is None else PolicyOut(**policy.to_dict())


def view(state: AppState) -> PolicyView:
    try:
        current = state.registry.current()
    except CorruptPointer:
        current = None
    try:
        policy, problem = state.registry.policy(), None
    except CorruptPolicy as exc:
        policy, problem = None, str(exc)
    tally = state.experiment.tally
    live, ended = tally.summary(), tally.ended
    return PolicyView(
        model=state.registry.model,
        current=current,
        policy=out(policy),
        policy_error=problem,
        live=None if live is None else PolicyLive(**live),
        ended=None if ended is None else PolicyLive(**ended),
    )


def final(state: AppState, ended: Policy | None) -> PolicyLive | None:
    """This process's figures of the experiment `ended`, which it has just stopped applying."""
    figures = state.experiment.tally.ended
    if ended is None or figures is None or not ended.same_experiment(Policy(**figures["policy"])):
        return None
    return PolicyLive(**figures)


@router.get("/policy", summary="The routing policy (canary, sticky or shadow)", response_model=PolicyView)
async def get_policy(state: State) -> PolicyView:
    return await asyncio.to_thread(view, state)


@router.put(
    "/policy",
    summary="Set the routing policy: a canary, a sticky split or a shadow version",
    response_model=PolicyView,
    dependencies=[TokenRequired],
    responses=error_responses(
        400,
        401,
        403,
        404,
        409,
        422,
        503,
        _400="The body is not JSON.",
        _404="No such version.",
        _409="The version is the current one (already_current) or does not load (corrupt_version).",
        _422="A field is missing, unknown or out of bounds (percent 0..100, mode canary|sticky|shadow).",
    ),
)
async def set_policy(body: PolicyIn, request: Request, state: State) -> PolicyView:
    who = f"api from {request.client.host if request.client else 'unknown'}"

    def put() -> PolicyView:
        version = parse_version(body.version)
        # exists, is not current, loads, validates and warms up (cached for the routing); this
        # process applies it now, the others follow the stamp
        state.models.start_policy(Policy(body.mode, version, body.percent, utc_now(), who))
        return view(state)

    return await asyncio.to_thread(put)


@router.delete(
    "/policy",
    summary="End the experiment: every request goes to the current version",
    response_model=PolicyEnded,
    dependencies=[TokenRequired],
    responses=error_responses(401, 403, 503),
)
async def end_policy(state: State) -> PolicyEnded:
    def end() -> PolicyEnded:
        ended = state.registry.clear_policy()
        state.shadow.wait_idle(SHADOW_WAIT_S)  # the shadow's queued rows, in the final figures
        state.models.refresh()  # this process stops applying it: its figures become final
        return PolicyEnded(model=state.registry.model, ended=out(ended), final=final(state, ended))

    return await asyncio.to_thread(end)


@router.post(
    "/policy/promote",
    summary="Promote the policy's version (the ordinary promote, with its checks), then end the experiment",
    response_model=PolicyPromoted,
    dependencies=[TokenRequired],
    responses=error_responses(401, 403, 404, 409, 503),
)
async def promote_policy(state: State) -> PolicyPromoted:
    def promote() -> PolicyPromoted:
        state.shadow.wait_idle(SHADOW_WAIT_S)  # the shadow's queued rows, in the final figures
        move = state.models.promote_candidate()
        assert move.ended is not None  # registry.candidate: the policy promoted
        return PolicyPromoted(
            model=state.registry.model,
            current=move.current,
            previous=move.previous,
            ended=out(move.ended),
            final=final(state, move.ended),
        )

    return await asyncio.to_thread(promote)
