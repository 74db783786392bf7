"""Schemathesis hooks for the contract test (`SCHEMATHESIS_HOOKS=schemathesis_hooks`): training kept tiny.

Every `POST /train` body the fuzzer sends is made small before it goes out: a schema-valid length or
width is lowered to another valid one (one epoch, a few iterations, 8 units a layer), and a body that
names no length gets one epoch and one small layer, so whatever the fuzzer asks for trains in a
fraction of a second on the test's tiny data. Values outside the schema are left alone: the negative
cases must reach the service as generated.
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _small_int(value: Any, largest: int) -> Any:
    """`value` lowered to `largest` if it is a valid (positive) integer; anything else unchanged."""
    if type(value) is int and value >= 1:
        return min(value, largest)
    return value


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.method.upper() != "POST" or case.operation.path != "/train":
        return
    body = case.body
    if not isinstance(body, dict):
        return
    if "epochs" in body:
        body["epochs"] = _small_int(body["epochs"], 1)
    if "iters" in body:
        body["iters"] = _small_int(body["iters"], 5)
    if "epochs" not in body and "iters" not in body:
        body["epochs"] = 1
    hidden = body.get("hidden")
    if isinstance(hidden, list):
        body["hidden"] = [_small_int(h, 8) for h in hidden]
    elif "hidden" not in body:
        body["hidden"] = [8]
    if "json" in kwargs:
        kwargs["json"] = body
