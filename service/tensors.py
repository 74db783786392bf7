"""V2 bodies in and out, JSON or binary tensors: one wire format whose two ends must agree, hence one module.

A request is a JSON object, optionally followed by raw tensor bytes (the binary tensor data
extension, which tritonclient uses by default): the `Inference-Header-Content-Length` header then
gives the JSON's length, and an input whose `parameters` hold `binary_data_size` has its values,
little-endian and row-major, in the bytes after the JSON, in input order. An output is returned
the same way when its `parameters` say `binary_data: true`, or when the request's `parameters` say
`binary_data_output: true` and the output does not say otherwise; the answer then carries the
JSON's length in the same header and is `application/octet-stream`, else `application/json`.

Nothing here knows HTTP: a body this model cannot answer is an `InvalidRequest` (the route answers
400), whose message says what is wrong without echoing much of what was sent.

Speed: a [64, 784] FP32 request is ~380 kB of JSON numbers. The standard library's `json.loads`
takes ~8 ms to make 50,176 Python floats of them and NumPy ~2 ms more to read those back; simdjson
(pysimdjson) parses the document and hands the `data` array over as one buffer of doubles, no
Python object per number, in ~0.8 ms. Everything but `data` becomes plain Python (`as_dict`). The
answer is written by orjson, which reads NumPy arrays directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from mlp import as_input

MAX_BATCH = 1024
OUTPUT_NAMES = ("probabilities", "label")
# What each datatype's tensor holds: its shape after the batch dimension and its binary layout.
INPUT_TAILS = {"FP32": [784], "UINT8": [28, 28]}
INPUT_LAYOUTS: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
OUTPUT_LAYOUTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "probabilities": ("FP32", np.dtype("<f4")),
    "label": ("INT64", np.dtype("<i8")),
}
HEADER = "Inference-Header-Content-Length"
# The extension's own parameters: they steer the encoding, so they are not echoed back.
EXTENSION_PARAMETERS = frozenset({"binary_data_output"})
MAX_ECHOED_PARAMETERS = 16 * 1024  # bytes of the request's parameters as JSON


class InvalidRequest(ValueError):
    """The body is not an inference request this model can answer (a client's error)."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """What a request asks: its pixels, the outputs it wants (in order, each JSON or binary)."""

    id: str | None
    parameters: dict[str, Any]  # the request's own, echoed in the answer (the extension's left out)
    pixels: np.ndarray  # (n, 784): uint8 0..255, or float32 0..1 as in training
    outputs: tuple[RequestedOutput, ...]


def short(value: object, limit: int = 40) -> str:
    """`repr(value)`, cut to `limit` characters: an error never echoes much of what it was sent."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON's length from the `Inference-Header-Content-Length` header (None when absent)."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or int(value) > body_size:
        raise InvalidRequest(
            f"{HEADER} must be the length in bytes of the JSON at the start of the body "
            f"(0..{body_size}), got {short(value)}"
        )
    return int(value)


def load_json(raw: bytes | bytearray, binary_expected: bool) -> Any:
    """The parsed document: a `simdjson.Object` for an object (its values read on access)."""
    try:
        return simdjson.Parser().parse(raw)  # a parser per document: requests may run on threads
    except (ValueError, RuntimeError) as exc:  # bad syntax, bad UTF-8, too deep, integers past 64 bits
        reason = str(exc).split(". ", 1)[0][:200]  # simdjson's first sentence says what it found
        hint = ""
        if not binary_expected and b"binary_data_size" in raw:
            hint = f" (a body with binary tensors needs the {HEADER} header)"
        raise InvalidRequest(f"the body is not valid JSON: {reason}{hint}") from None


def plain(value: Any) -> Any:
    """A parsed JSON value as plain Python (dicts, lists, numbers, strings)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def parse_request(raw: bytes | bytearray, json_length: str | None) -> InferRequest:
    """The request in `raw` (the whole body); `json_length` is the extension's header, if sent."""
    length = header_length(json_length, len(raw))
    view = memoryview(raw)
    document = load_json(raw if length is None else raw[:length], length is not None)
    if not isinstance(document, simdjson.Object):
        raise InvalidRequest("expected a JSON object with 'inputs': a list holding one tensor")
    body = {key: document[key] if key == "inputs" else plain(document[key]) for key in document}
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest(f"'id' must be a string, got {short(request_id)}")
    parameters = body.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise InvalidRequest(f"'parameters' must be an object, got {short(parameters)}")
    binary = view[length:] if length is not None else view[:0]
    pixels = parse_inputs(body, binary, length is not None)
    outputs = requested_outputs(body, parameters)
    echoed = {k: v for k, v in parameters.items() if k not in EXTENSION_PARAMETERS}
    try:  # echoed in the answer: it must be writable (orjson nests 255 deep at most) and small
        echoed_size = len(orjson.dumps(echoed)) if echoed else 0
    except orjson.JSONEncodeError:
        raise InvalidRequest("'parameters' are nested too deeply to be echoed") from None
    if echoed_size > MAX_ECHOED_PARAMETERS:
        raise InvalidRequest(f"'parameters' are echoed in the answer: at most {MAX_ECHOED_PARAMETERS} bytes")
    return InferRequest(request_id, echoed, pixels, outputs)


def flag(parameters: dict[str, Any], name: str, where: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where} parameter {name!r} must be true or false, got {short(value)}")
    return value


def requested_outputs(body: dict[str, Any], parameters: dict[str, Any]) -> tuple[RequestedOutput, ...]:
    """The outputs the request asks for, in its order (all of them when it names none)."""
    binary_default = flag(parameters, "binary_data_output", "the request's", False)
    requested = body.get("outputs") or []
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InvalidRequest("'outputs' must be a list of objects, each with a 'name'")
    if not requested:
        return tuple(RequestedOutput(name, binary_default) for name in OUTPUT_NAMES)
    names = [o["name"] for o in requested]
    if unknown := sorted(set(names) - set(OUTPUT_NAMES)):
        raise InvalidRequest(f"unknown outputs {short(unknown)}; this model has 'probabilities' and 'label'")
    if len(set(names)) != len(names):
        raise InvalidRequest("each output may be asked for once")
    outputs = []
    for output in requested:
        output_parameters = output.get("parameters") or {}
        if not isinstance(output_parameters, dict):
            raise InvalidRequest(f"output {output['name']!r}: 'parameters' must be an object")
        if unsupported := sorted({"classification", "shared_memory_region"} & set(output_parameters)):
            raise InvalidRequest(f"output {output['name']!r}: {unsupported[0]!r} is not supported here")
        binary = flag(output_parameters, "binary_data", f"output {output['name']!r}", binary_default)
        outputs.append(RequestedOutput(output["name"], binary))
    return tuple(outputs)


def check_shape(datatype: str, shape: Any) -> list[int]:
    tail = INPUT_TAILS[datatype]
    if isinstance(shape, list):  # 784.0 is an integer (as JSON Schema says); true is not
        shape = [int(d) if type(d) is float and d.is_integer() else d for d in shape]
    if (
        not isinstance(shape, list)
        or len(shape) != len(tail) + 1
        or not all(type(d) is int for d in shape)
        or shape[1:] != tail
        or not 1 <= shape[0] <= MAX_BATCH
    ):
        raise InvalidRequest(
            f"{datatype} input must have shape [N, {', '.join(map(str, tail))}] "
            f"with 1 <= N <= {MAX_BATCH}, got {short(shape)}"
        )
    return shape


def parse_inputs(body: dict[str, Any], binary: memoryview, has_header: bool) -> np.ndarray:
    """The one input tensor of a V2 request, checked and scaled as the network expects."""
    inputs = body.get("inputs")
    if not isinstance(inputs, simdjson.Array) or len(inputs) != 1:
        raise InvalidRequest("expected a JSON object with 'inputs': a list holding one tensor")
    if not isinstance(inputs[0], simdjson.Object):
        raise InvalidRequest("an input tensor must be an object with name, shape, datatype and data")
    # all but the numbers as plain Python; `data` stays parsed-but-unread for `json_input`
    tensor = {key: inputs[0][key] if key == "data" else plain(inputs[0][key]) for key in inputs[0]}
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in INPUT_TAILS:
        raise InvalidRequest(
            f"datatype must be FP32 ([N,784], 0..1) or UINT8 ([N,28,28], 0..255), got {short(datatype)}"
        )
    shape = check_shape(datatype, tensor.get("shape"))
    count = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("an input's 'parameters' must be an object")
    if "shared_memory_region" in parameters:
        raise InvalidRequest("shared memory inputs are not supported here; send the data in the body")
    if "binary_data_size" in parameters:
        array = binary_input(datatype, count, parameters["binary_data_size"], binary, has_header, tensor)
    else:
        if len(binary):
            raise InvalidRequest(
                f"the body has {len(binary)} bytes after its JSON but no input says 'binary_data_size'"
            )
        array = json_input(tensor.get("data"), count, shape)
    return checked_pixels(datatype, array, shape[0])


def binary_input(
    datatype: str, count: int, size: Any, binary: memoryview, has_header: bool, tensor: dict[str, Any]
) -> np.ndarray:
    """The tensor's values from the bytes after the JSON (this model has one input: all of them)."""
    if not has_header:
        raise InvalidRequest(f"an input with 'binary_data_size' needs the {HEADER} header")
    if "data" in tensor:
        raise InvalidRequest("an input with 'binary_data_size' carries no 'data'")
    layout = INPUT_LAYOUTS[datatype]
    expected = count * layout.itemsize
    if type(size) is not int or size != expected:
        raise InvalidRequest(
            f"'binary_data_size' of a {datatype} input of {count} values must be {expected}, "
            f"got {short(size)}"
        )
    if len(binary) != expected:
        raise InvalidRequest(
            f"the body has {len(binary)} bytes after its JSON; 'binary_data_size' says {expected}"
        )
    return np.frombuffer(binary, dtype=layout).astype(layout.newbyteorder("="), copy=True)


def json_input(data: Any, count: int, shape: list[int]) -> np.ndarray:
    """The values of a JSON `data` array (flat, or nested as the shape), as float64."""
    if not isinstance(data, simdjson.Array):
        raise InvalidRequest("'data' must be a flat (or nested) list of numbers")
    try:  # flattened in document order; anything but numbers (booleans, strings, null) is refused
        array = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidRequest("'data' must be a flat (or nested) list of numbers") from None
    if array.size != count:
        raise InvalidRequest(f"'data' holds {array.size} values, shape {shape} needs {count}")
    return array


def checked_pixels(datatype: str, array: np.ndarray, n: int) -> np.ndarray:
    """(n, 784) pixels as the network reads them: uint8 0..255, or float32 0..1."""
    if array.dtype == np.uint8:  # binary UINT8: every byte is a pixel
        return array.reshape(n, 784)
    if not np.isfinite(array).all():
        raise InvalidRequest("'data' contains NaN or infinite values")
    if datatype == "UINT8":
        if array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array)):
            raise InvalidRequest("UINT8 data must be integers 0..255")
        return array.reshape(n, 784).astype(np.uint8)
    if array.min() < 0 or array.max() > 1:  # also keeps float32 from overflowing to inf
        raise InvalidRequest("FP32 data must be pixels scaled to 0..1 (value / 255), as in training")
    return as_input(array.reshape(n, 784).astype(np.float32, copy=False))


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_response(
    request: InferRequest, model_name: str, version: str, probabilities: np.ndarray
) -> EncodedResponse:
    """The answer to `request`: its outputs in its order, each as JSON or as binary as it asked."""
    values = {"probabilities": probabilities, "label": probabilities.argmax(axis=1)}
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in request.outputs:
        datatype, layout = OUTPUT_LAYOUTS[output.name]
        array = np.ascontiguousarray(values[output.name], dtype=layout)
        tensor: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": list(array.shape)}
        if output.binary:
            data = array.tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = array.ravel()  # orjson writes a float32 as its shortest repr: 0.12345679
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request.id is not None:
        response["id"] = request.id
    if request.parameters:
        response["parameters"] = request.parameters
    response["outputs"] = outputs
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return EncodedResponse(header, "application/json", {})
    return EncodedResponse(
        b"".join([header, *chunks]), "application/octet-stream", {HEADER: str(len(header))}
    )
