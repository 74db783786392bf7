"""`POST /predict`: image uploads in, digits and probabilities out.

The body is read once with a size cap (413 before anything is parsed) and split into images
(`service.uploads`); they become 28x28 digits (large ones on the app's pool of threads) and all of
them go through the network in one pass, shared with the other requests of the same event-loop
turn under load (`service.batcher`). The answer is built as plain JSON without a response-model
round trip. One route: its declared parameters produce the OpenAPI document, and FastAPI solves
them, unless the `route` fast path (service/fastpaths.py) calls the endpoint directly
(`PredictRoute`), with the query validated by that same model.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import numpy as np
from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import error_responses
from service.experiment import Routed
from service.explain import explanations
from service.fastpaths import DirectRoute, Routes
from service.loaded_model import Answers, LoadedModel
from service.metrics import Metrics
from service.state import AppState
from service.uploads import IMAGE_TYPES, Upload, digitize_uploads, read_uploads

PROBABILITY_DECIMALS = 6  # the one precision of `probabilities` and `confidence`


class Explanation(BaseModel):
    digit: int = Field(description="The digit explained (the answer).")
    map: list[list[float]] = Field(
        description="28x28, gradient x input of the answer's logit: positive where the pixel argued for "
        "the answer, negative where it argued against, 0 where there is no ink."
    )
    png: str = Field(description="The map drawn over the digit (red for, blue against) as a data: URL.")


class Prediction(BaseModel):
    id: str = Field(
        description="This answer's id: `POST /feedback` with it and the right digit stores what the network "
        "saw (for MNIST_FEEDBACK_ID_TTL_S, by the worker process that answered)."
    )
    filename: str | None = Field(None, description="The part's file name, for multipart uploads.")
    digit: int = Field(description="The most likely digit.")
    confidence: float = Field(description="Its probability (the same number as in `probabilities`).")
    probabilities: list[float] = Field(description="Probability of each digit 0..9, to six decimals.")
    digit_score: float | None = Field(
        description="How much the image looked like a handwritten digit to this model: the share of real "
        "held-out digits it finds less digit-like (0..1; 0.5 is a typical digit, below about 0.01 it is "
        "probably not a digit at all). Null for a version published without the calibration."
    )
    input: list[list[int]] | None = Field(None, description="With debug=1: the 28x28 the network saw.")
    explanation: Explanation | None = Field(
        None, description="With explain=1: how much each pixel of the 28x28 pushed towards the answer."
    )


class PredictResponse(BaseModel):
    model: str
    version: str = Field(description="The model version that answered.")
    predictions: list[Prediction]


class PredictQuery(BaseModel):
    """The query parameters of `/predict`: declared once, here, for the docs and for validation."""

    model_config = ConfigDict(frozen=True)

    version: str | None = Field(
        None,
        max_length=16,
        description="Version to ask, by its name exactly as listed (v0003) or current; default current",
    )
    debug: bool = Field(False, description="Also return the 28x28 input the network saw")
    explain: bool = Field(False, description="Also return why: each pixel's push towards the answer")


NO_QUERY = PredictQuery()

# The body is read by the endpoint itself (streamed to its cap, multipart or a raw image), so it
# is described here rather than by a parameter: FastAPI would parse a declared one on every request.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                        }
                    },
                    "required": ["file"],
                }
            },
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES[:5]},
        },
    },
}


class PredictRoute(DirectRoute):
    """The `route` fast path of /predict: the endpoint called with the request and its query model."""

    def arguments(self, request: Request) -> dict[str, Any]:
        return {"request": request, "query": query_of(request)}


routes = Routes(PredictRoute, tags=["predict"])


def query_of(request: Request) -> PredictQuery:
    """The validated query parameters (errors as FastAPI reports them: 422, located in the query)."""
    if not request.scope["query_string"]:
        return NO_QUERY
    params = request.query_params
    try:
        return PredictQuery.model_validate({k: params[k] for k in PredictQuery.model_fields if k in params})
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


@routes.post(
    "/predict",
    summary="Read the digit in one or several images",
    response_model=PredictResponse,
    openapi_extra=UPLOAD_BODY,
    responses=error_responses(
        400,
        404,
        409,
        413,
        415,
        422,
        503,
        _400="Unreadable image or malformed upload.",
        _404="No such version.",
        _409="The version asked for is damaged on disk.",
        _413="Body or image too large, or too many pixels in all the images.",
        _415="Not an image type this service reads.",
        _422="No digit found (blank image), absurd dimensions, or a bad query parameter.",
        _503="No model loaded yet, or too many request bodies in flight (see Retry-After).",
    ),
)
async def predict(request: Request, query: Annotated[PredictQuery, Query()]) -> Response:
    # The app state comes from the request, not through the `State` dependency: the `route` fast
    # path calls the endpoint without FastAPI's dependency machinery (see PredictRoute).
    state: AppState = request.app.state.services
    if (routing := state.models.routing) is None or query.version is not None:
        model, routed = state.model_for(query.version), None
    else:  # a routing policy (canary, sticky, shadow) for requests that name no version
        routed = Routed.start(routing, state.model_for(None), request)
        model = routed.model
    uploads, held = await read_uploads(request, state.settings, state.bodies, state.fast)
    try:
        digits = await digitize_uploads(uploads, state.settings, state.pool, state.fast)
    finally:
        state.bodies.release(held)
    if state.settings.predict_batching:
        answers = await state.batcher.answer(model, digits)
    else:
        answers = model.answer(digits)
    content = answer(state, model, uploads, digits, answers, query)
    response = JSONResponse(content)
    if routed is not None:
        routed.finish(state, request, digits, answers.probabilities)
    return response


def answer(
    state: AppState,
    model: LoadedModel,
    uploads: list[Upload],
    digits: np.ndarray,
    answers: Answers,
    query: PredictQuery,
) -> dict:
    probabilities = answers.probabilities
    answer_digits = probabilities.argmax(axis=1)
    best = answer_digits.tolist()
    why = explanations(model.net, digits, answer_digits) if query.explain else None
    # Six decimals for every probability and the confidence alike, rounded in float64: a float32
    # rounded to 1e-6 is still 9.999999974752427e-07 once it becomes a Python float.
    rounded = probabilities.astype(np.float64).round(PROBABILITY_DECIMALS)
    scores = None if answers.digit_scores is None else answers.digit_scores.round(4).tolist()
    metrics = state.metrics
    recent, new_id = state.feedback.recent, state.feedback.new_id
    version = model.version
    predictions = []
    for i, (filename, _) in enumerate(uploads):
        digit = best[i]
        confidence = float(rounded[i, digit])
        digit_counter(metrics, digit).inc()
        metrics.confidence.observe(confidence)
        answer_id = new_id()
        recent.keep(answer_id, digits, i, version, digit, confidence)  # for POST /feedback
        item = {
            "id": answer_id,
            "filename": filename,
            "digit": digit,
            "confidence": confidence,
            "probabilities": rounded[i].tolist(),
            "digit_score": None if scores is None else scores[i],
        }
        if scores is not None:
            metrics.digit_score.observe(scores[i])
        if query.debug:
            item["input"] = digits[i].tolist()
        if why is not None:
            item["explanation"] = why[i]
        predictions.append(item)
    return {"model": state.registry.model, "version": version, "predictions": predictions}


@functools.lru_cache(maxsize=256)
def digit_counter(metrics: Metrics, digit: int) -> Any:
    """The `mnist_predictions_total` child of one digit (looking a label set up costs more than counting)."""
    return metrics.predictions.labels(str(digit))
