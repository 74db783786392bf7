"""What /docs shows of the V2 routes (service/routers/v2.py): the inference body, answers and errors.

The infer routes read their body themselves (capped, parsed on the pool when large), so its schema
is declared here for the docs and for schema-driven clients rather than through a parameter FastAPI
would parse; `service.tensors` is what checks a body against it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service import tensors
from service.errors import error_responses
from service.tensors import MAX_BATCH


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
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_output": {"type": "boolean"}},
                            "description": "Echoed in the answer (but for `binary_data_output`).",
                        },
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
                                    "name": {"type": "string", "enum": ["probabilities", "label"]},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "The binary tensor data extension: the JSON request (its length in the "
                    f"{tensors.HEADER} header), then the input's values as little-endian bytes; the input "
                    "says `parameters: {binary_data_size: N}` instead of `data`.",
                }
            },
        },
    },
    "parameters": [
        {
            "name": tensors.HEADER,
            "in": "header",
            "required": False,
            "description": "The binary tensor data extension: the length of the JSON at the start of the "
            "body; binary tensor bytes follow it.",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
}
INFER_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs asked for (all by default), each as JSON `data` or, when asked "
        "with `binary_data` (or the request's `binary_data_output`), as bytes after the JSON: the "
        f"answer is then `application/octet-stream` with the JSON's length in {tensors.HEADER}.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


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
    415,
    503,
    model=V2ErrorOut,
    _400="Not a valid inference request (the message says what).",
    _404="No such model or version.",
    _409="The version's files are damaged.",
    _413="The body is over MNIST_MAX_V2_BODY_BYTES (or inflates past it).",
    _415="A Content-Encoding other than gzip, deflate or identity.",
    _503="No version loaded yet, or too many request bodies in flight (see Retry-After).",
)
