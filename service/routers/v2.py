"""Open Inference Protocol (KServe V2), so existing inference clients work unchanged.

Inputs: `[N, 784]` FP32 pixels scaled to [0, 1] exactly as in training, or `[N, 28, 28]` UINT8
pixels 0..255 (white ink on black, as MNIST). Outputs: `probabilities` `[N, 10]` FP32 and
`label` `[N]` INT64. Tensors travel as JSON or, with the binary tensor data extension, as raw bytes
after the JSON (`service.tensors` reads and writes both). Errors follow the protocol:
`{"error": "<message>"}`, with the status the service's one error table (service/errors.py) gives
the same error on every other route.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from service import encoding, tensors
from service.body import read_body
from service.errors import ServiceError, http_answer
from service.experiment import Routed
from service.fastpaths import DirectRoute, Routes
from service.routers.predict import digit_counter
from service.routers.v2_docs import INFER_ANSWER, INFER_BODY, INFER_ERRORS, MODEL_ERRORS, VERSION_ERRORS
from service.state import AppState, State
from service.tensors import short

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

# Bodies whose JSON is larger than this are parsed on the app's pool of threads, so a body at the
# cap (MNIST_MAX_V2_BODY_BYTES) does not stall the event loop. simdjson parses ~200-400 MB/s here
# (a [64, 784] FP32 body, ~380 kB, in ~1 ms), less than a hop to a thread and back costs under load;
# binary tensor bytes (the binary data extension) are copied, not parsed, and do not count.
OFFLOAD_BYTES = 1024 * 1024
# A request of this many rows or more runs its own pass: its rows already share each read of the
# weights, and joining others only makes a larger pass (8 x [64, 784]: 12 ms against 8 x 1.3 ms
# alone, measured) and larger temporary arrays (a worker's memory grew ~6 MiB more under load).
ALONE_ROWS = 32
INFLATE_ON_LOOP_BYTES = 64 * 1024  # a larger gzip or deflate body is inflated on the pool (up to ~4 MiB)
INPUTS = [
    {"name": "input", "datatype": "FP32", "shape": [-1, 784]},
    {"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28]},
]
OUTPUTS = [
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    {"name": "label", "datatype": "INT64", "shape": [-1]},
]


# Any name or version is looked up (an unknown one, of whatever length, is the protocol's 404), so no
# request to these routes is refused by FastAPI's own validation with a body of the other shape.
Name = Annotated[str, Path(description="The model's name: mnist.")]
Version = Annotated[
    str,
    Path(
        description="A version's name exactly as listed (v0003), current, or Triton's number for it (3).",
    ),
]


class V2Error(ServiceError):
    """A request the protocol refuses (the status is given); answered like any error of the table."""

    code = "invalid_request"

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


TRITON_VERSION = re.compile(r"^[1-9]\d{0,5}$")


def model_version(state: AppState, name: str, version: str | None) -> str:
    if name != state.registry.model:
        raise V2Error(404, f"unknown model {short(name)}; this server serves {state.registry.model!r}")
    if version is None and state.models.current is None:
        raise V2Error(503, "no model version is loaded yet")
    # the table answers VersionNotFound 404, CorruptVersion 409
    return state.models.get(triton_version(version)).version


def triton_version(version: str | None) -> str | None:
    """Triton's clients name versions by number (`model_version="2"`): here that is v0002.

    Only on the V2 routes, as an adapter to that protocol's convention; every other route takes a
    version by its name exactly as listed (registry.parse_version).
    """
    if version is not None and TRITON_VERSION.match(version):
        return f"v{int(version):04d}"
    return version


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
    return {"name": "mnist-service", "version": "1.0.0", "extensions": ["binary_tensor_data"]}


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


class InferRoute(DirectRoute):
    """The `route` fast path of the V2 inference routes (service/fastpaths.py), as /predict's: the
    endpoint called with the request, the app state and the path parameters, directly."""

    def arguments(self, request: Request) -> dict[str, Any]:
        return {"request": request, "state": request.app.state.services, **request.path_params}


# The inference routes: the hot path, put into the app by `infer_routes.install` (service/app.py).
infer_routes = Routes(InferRoute, prefix="/v2", tags=["open inference protocol (v2)"])


@infer_routes.post(
    "/models/{name}/infer",
    summary="Inference on the current version",
    openapi_extra=INFER_BODY,
    responses={**INFER_ANSWER, **INFER_ERRORS},
)
@guarded
async def infer(name: Name, request: Request, state: State) -> Response:
    return await run_inference(state, request, name, None)


@infer_routes.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on a given version",
    openapi_extra=INFER_BODY,
    responses={**INFER_ANSWER, **INFER_ERRORS},
)
@guarded
async def infer_version(name: Name, version: Version, request: Request, state: State) -> Response:
    return await run_inference(state, request, name, version)


async def run_inference(state: AppState, request: Request, name: str, version: str | None) -> Response:
    served = model_version(state, name, version)
    if (routing := state.models.routing) is None or version is not None:
        model, routed = state.models.get(served), None
    else:  # a routing policy (canary, sticky, shadow) for requests that name no version
        routed = Routed.start(routing, state.models.get(served), request)
        model = routed.model
        served = model.version
    limit = state.settings.max_v2_body_bytes
    raw = await read_body(request, limit, state.bodies)
    json_length = request.headers.get(tensors.HEADER)
    coding = request.headers.get("content-encoding")
    try:
        if coding is not None:  # tritonclient's request_compression_algorithm: inflated within the cap
            if len(raw) > INFLATE_ON_LOOP_BYTES or not state.fast.inline:
                body = await state.pool.run(encoding.decoded, raw, coding, limit)
            else:
                body = encoding.decoded(raw, coding, limit)
        else:
            body = raw
        json_size = len(body)
        if json_length is not None and json_length.strip().isdigit():
            json_size = min(json_size, int(json_length))
        if json_size > OFFLOAD_BYTES or not state.fast.inline:
            parsed = await state.pool.run(tensors.parse_request, body, json_length)
        else:
            parsed = tensors.parse_request(body, json_length)
    finally:
        state.bodies.release(len(raw))
    if state.settings.predict_batching and len(parsed.pixels) < ALONE_ROWS:
        # one pass with the other requests of this loop turn
        probabilities = (await state.batcher.answer(model, parsed.pixels)).probabilities
    else:
        probabilities = model.predict_proba(parsed.pixels)
    for label in probabilities.argmax(axis=1).tolist():
        digit_counter(state.metrics, label).inc()
    answer = tensors.encode_response(parsed, name, served, probabilities)
    content, headers = answer.body, answer.headers
    answer_coding = encoding.answer_coding(request.headers.get("accept-encoding"))
    if answer_coding is not None and len(content) >= encoding.MIN_COMPRESSED_ANSWER:
        content = encoding.encoded(content, answer_coding)
        headers = {**headers, "Content-Encoding": answer_coding, "Vary": "Accept-Encoding"}
    response = Response(content, media_type=answer.media_type, headers=headers)
    if routed is not None:
        routed.finish(state, request, parsed.pixels, probabilities)
    return response
