"""Open Inference Protocol (KServe V2), so existing inference clients work unchanged.

Inputs: `[N, 784]` FP32 pixels scaled to [0, 1] exactly as in training, or `[N, 28, 28]` UINT8
pixels 0..255 (white ink on black, as MNIST). Outputs: `probabilities` `[N, 10]` FP32 and
`label` `[N]` INT64. Errors follow the protocol: `{"error": "<message>"}`, with the status the
service's one error table (service/errors.py) gives the same error on every other route.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mlp import as_input
from service.body import read_body
from service.errors import ServiceError, error_responses, http_answer
from service.state import AppState, State

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

MAX_BATCH = 1024
# Bodies larger than this are parsed on the app's pool of threads. json.loads holds the GIL while it
# parses (~25 ms per MB here), so the body cap (MNIST_MAX_V2_BODY_BYTES) is what bounds that stall;
# checking and converting the numbers (NumPy) runs beside the event loop.
OFFLOAD_BYTES = 64 * 1024
INPUTS = [
    {"name": "input", "datatype": "FP32", "shape": [-1, 784]},
    {"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28]},
]
OUTPUTS = [
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    {"name": "label", "datatype": "INT64", "shape": [-1]},
]
DTYPES = {"FP32": np.float32, "UINT8": np.uint8}


# The body of an inference request, as the protocol defines it (and as `parse_inputs` checks it).
# The route reads the body itself (capped, parsed on the pool when large), so the schema is declared
# here for the docs and for schema-driven clients rather than through a parameter FastAPI would parse.
def tensor_schema(datatype: str, tail: list[int], value: dict[str, Any], meaning: str) -> dict[str, Any]:
    """One input tensor of `datatype`: shape [N, *tail], N x 784 values (flat or nested) like `value`."""
    return {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "maxLength": 64},
            "datatype": {"const": datatype},
            "shape": {
                "type": "array",
                "prefixItems": [{"type": "integer", "minimum": 1, "maximum": MAX_BATCH}]
                + [{"const": n} for n in tail],
                "minItems": 1 + len(tail),
                "maxItems": 1 + len(tail),
            },
            "data": {
                "type": "array",
                "items": {"anyOf": [value, {"type": "array"}]},
                "description": f"N x 784 {meaning}, flat or nested as the shape",
            },
            "parameters": {"type": "object"},
        },
    }


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "InferRequest",
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string", "maxLength": 256},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": {
                                "oneOf": [
                                    tensor_schema(
                                        "FP32",
                                        [784],
                                        {"type": "number", "minimum": 0, "maximum": 1},
                                        "pixels / 255",
                                    ),
                                    tensor_schema(
                                        "UINT8",
                                        [28, 28],
                                        {"type": "integer", "minimum": 0, "maximum": 255},
                                        "pixels 0..255, white ink on black",
                                    ),
                                ]
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "enum": ["probabilities", "label"]}
                                },
                            },
                        },
                    },
                }
            }
        },
    }
}

# Any name or version is looked up (an unknown one, of whatever length, is the protocol's 404), so no
# request to these routes is refused by FastAPI's own validation with a body of the other shape.
Name = Annotated[str, Path(description="The model's name: mnist.")]
Version = Annotated[str, Path(description="A version name: v0003, 0003 or 3.")]


class V2ErrorOut(BaseModel):
    """The protocol's error body."""

    error: str = Field(description="What was wrong.")


MODEL_ERRORS = error_responses(
    404, 503, model=V2ErrorOut, _404="No such model or version.", _503="No version loaded yet."
)
VERSION_ERRORS = error_responses(
    404, 409, model=V2ErrorOut, _404="No such model or version.", _409="The version's files are damaged."
)
INFER_ERRORS = error_responses(
    400,
    404,
    409,
    413,
    503,
    model=V2ErrorOut,
    _400="Not a valid inference request (the message says what).",
    _404="No such model or version.",
    _409="The version's files are damaged.",
    _413="The body is over MNIST_MAX_V2_BODY_BYTES.",
    _503="No version loaded yet, or too many request bodies in flight (see Retry-After).",
)


class V2Error(ServiceError):
    """A request the protocol refuses (the status is given); answered like any error of the table."""

    code = "invalid_request"

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def model_version(state: AppState, name: str, version: str | None) -> str:
    if name != state.registry.model:
        raise V2Error(404, f"unknown model {short(name)}; this server serves {state.registry.model!r}")
    if version is None and state.models.current is None:
        raise V2Error(503, "no model version is loaded yet")
    return state.models.get(version).version  # the table answers VersionNotFound 404, CorruptVersion 409


def guarded(handler: Any) -> Any:
    """Run a V2 handler: an error of the service's one table is answered in the protocol's shape."""

    @functools.wraps(handler)  # FastAPI reads the wrapped handler's parameters through __wrapped__
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:
            answer = http_answer(exc)
            if answer is None:
                raise
            return v2_error(answer.status, answer.detail, answer.headers)

    return run


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "mnist-service", "version": "1.0.0", "extensions": []}


@router.get("/health/live", summary="Server is live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Server is ready",
    responses={503: {"description": 'Not ready: `{"ready": false}`.'}},
)
async def ready(state: State) -> JSONResponse:
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)


def metadata(state: AppState, name: str, version: str | None) -> dict[str, Any]:
    served = model_version(state, name, version)
    return {
        "name": name,
        "versions": state.registry.versions(),
        "platform": "numpy-mlp",
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        **({"version": served} if version else {}),
    }


@router.get("/models/{name}", summary="Model metadata", responses=MODEL_ERRORS)
@guarded
async def model_metadata(name: Name, state: State) -> Any:
    return metadata(state, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model version metadata", responses=VERSION_ERRORS)
@guarded
async def version_metadata(name: Name, version: Version, state: State) -> Any:
    return metadata(state, name, version)


@router.get("/models/{name}/ready", summary="Model is ready", responses=MODEL_ERRORS)
@guarded
async def model_ready(name: Name, state: State) -> Any:
    model_version(state, name, None)
    return {"name": name, "ready": state.ready}


@router.get(
    "/models/{name}/versions/{version}/ready", summary="Model version is ready", responses=VERSION_ERRORS
)
@guarded
async def version_ready(name: Name, version: Version, state: State) -> Any:
    return {"name": name, "version": model_version(state, name, version), "ready": True}


@router.post(
    "/models/{name}/infer",
    summary="Inference on the current version",
    openapi_extra=INFER_BODY,
    responses=INFER_ERRORS,
)
@guarded
async def infer(name: Name, request: Request, state: State) -> Any:
    return await run_inference(state, request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on a given version",
    openapi_extra=INFER_BODY,
    responses=INFER_ERRORS,
)
@guarded
async def infer_version(name: Name, version: Version, request: Request, state: State) -> Any:
    return await run_inference(state, request, name, version)


async def run_inference(state: AppState, request: Request, name: str, version: str | None) -> dict[str, Any]:
    served = model_version(state, name, version)
    model = state.models.get(served)
    raw = await read_body(request, state.settings.max_v2_body_bytes, state.bodies)
    try:
        if len(raw) > OFFLOAD_BYTES:
            body, pixels, wanted = await state.pool.run(parse_request, raw)
        else:
            body, pixels, wanted = parse_request(raw)
    finally:
        state.bodies.release(len(raw))
    probabilities = model.predict_proba(pixels)
    labels = probabilities.argmax(axis=1)
    for label in labels:
        state.metrics.predictions.labels(str(int(label))).inc()
    outputs = []
    if "probabilities" in wanted:
        outputs.append(
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probabilities.shape),
                "data": probabilities.ravel().tolist(),
            }
        )
    if "label" in wanted:
        outputs.append(
            {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels.tolist()}
        )
    response = {"model_name": name, "model_version": served, "outputs": outputs}
    if isinstance(body.get("id"), str):
        response["id"] = body["id"]
    return response


def short(value: object, limit: int = 40) -> str:
    """`repr(value)`, cut to `limit` characters: an error never echoes much of what it was sent."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_request(raw: bytes | bytearray) -> tuple[dict[str, Any], np.ndarray, set[str]]:
    """The body, its input tensor (checked, scaled) and the outputs it asks for."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise V2Error(400, "the body is nested too deeply to be a V2 request") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise V2Error(400, f"the body is not valid JSON: {str(exc)[:200]}") from None
    pixels = parse_inputs(body)
    return body, pixels, requested_outputs(body)


def requested_outputs(body: dict[str, Any]) -> set[str]:
    """The output names the request asks for (all of them when it names none)."""
    requested = body.get("outputs") or []
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise V2Error(400, "'outputs' must be a list of objects, each with a 'name'")
    wanted = {o["name"] for o in requested} or {"probabilities", "label"}
    if unknown := wanted - {"probabilities", "label"}:
        raise V2Error(
            400, f"unknown outputs {short(sorted(unknown))}; this model has 'probabilities' and 'label'"
        )
    return wanted


def parse_inputs(body: Any) -> np.ndarray:
    """The one input tensor of a V2 request, checked and scaled as the network expects."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise V2Error(400, "expected a JSON object with 'inputs': a list holding one tensor")
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict):
        raise V2Error(400, "an input tensor must be an object with name, shape, datatype and data")
    datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise V2Error(
            400, f"datatype must be FP32 ([N,784], 0..1) or UINT8 ([N,28,28], 0..255), got {short(datatype)}"
        )
    expected_tail = [784] if datatype == "FP32" else [28, 28]
    if isinstance(shape, list):  # 784.0 is an integer (as JSON Schema says); true is not
        shape = [int(d) if type(d) is float and d.is_integer() else d for d in shape]
    if (
        not isinstance(shape, list)
        or len(shape) != len(expected_tail) + 1
        or not all(type(d) is int for d in shape)
        or shape[1:] != expected_tail
        or not 1 <= shape[0] <= MAX_BATCH
    ):
        raise V2Error(
            400,
            f"{datatype} input must have shape [N, {', '.join(map(str, expected_tail))}] "
            f"with 1 <= N <= {MAX_BATCH}, got {short(shape)}",
        )
    try:
        # NumPy infers the type: numbers give int64 or float64; booleans, strings, integers past 64
        # bits (10**400), objects and mixtures give another kind, refused below.
        array = np.asarray(data)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise V2Error(400, "'data' must be a flat (or nested) list of numbers") from None
    if array.dtype.kind not in "iuf":
        raise V2Error(400, "'data' must be a flat (or nested) list of numbers")
    array = array.astype(np.float64, copy=False)
    if array.size != math.prod(shape):
        raise V2Error(400, f"'data' holds {array.size} values, shape {shape} needs {math.prod(shape)}")
    if not np.isfinite(array).all():
        raise V2Error(400, "'data' contains NaN or infinite values")
    if datatype == "UINT8":
        if array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array)):
            raise V2Error(400, "UINT8 data must be integers 0..255")
        return array.reshape(shape[0], 784).astype(np.uint8)
    if array.min() < 0 or array.max() > 1:  # also keeps float32 from overflowing to inf
        raise V2Error(400, "FP32 data must be pixels scaled to 0..1 (value / 255), as in training")
    return as_input(array.reshape(shape[0], 784).astype(np.float32))
