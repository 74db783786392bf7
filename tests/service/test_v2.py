"""The Open Inference Protocol (KServe V2) endpoints, as an inference client would call them."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import numpy as np
import pytest
from conftest import MakeClient, Publish, digit_pixels, variant
from fastapi.testclient import TestClient

from images import digitize_array

INFER = "/v2/models/mnist/infer"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four digits as the network sees them: (4, 28, 28) uint8, white ink on black."""
    return np.stack([digitize_array(np.asarray(digit_pixels(k))) for k in (0, 3, 7, 9)])


def fp32(images: np.ndarray) -> dict[str, Any]:
    pixels = (images.reshape(len(images), 784) / 255).astype(np.float32)
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [len(images), 784],
                "data": pixels.ravel().tolist(),
            }
        ]
    }


def uint8(images: np.ndarray) -> dict[str, Any]:
    shape = [len(images), 28, 28]
    return {
        "inputs": [{"name": "input", "datatype": "UINT8", "shape": shape, "data": images.ravel().tolist()}]
    }


def outputs_of(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def assert_v2_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    return body["error"]


# -- server and model metadata -------------------------------------------------------------------


def test_server_metadata_and_health(api: TestClient) -> None:
    assert api.get("/v2").json() == {
        "name": "mnist-service",
        "version": "1.0.0",
        "extensions": ["binary_tensor_data"],
    }
    assert api.get("/v2/health/live").json() == {"live": True}
    ready = api.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_not_ready_without_a_model(make_client: MakeClient) -> None:
    with make_client() as client:
        ready = client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        assert client.get("/v2/health/live").json() == {"live": True}
        assert_v2_error(client.get("/v2/models/mnist"), 503)
        assert_v2_error(client.post(INFER, json={"inputs": []}), 503)


def test_model_metadata(api: TestClient) -> None:
    response = api.get("/v2/models/mnist")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "mnist" and body["versions"] == ["v0001"] and body["platform"] == "numpy-mlp"
    assert "version" not in body
    assert {"name": "input", "datatype": "FP32", "shape": [-1, 784]} in body["inputs"]
    assert {"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28]} in body["inputs"]
    assert {(o["name"], o["datatype"], tuple(o["shape"])) for o in body["outputs"]} == {
        ("probabilities", "FP32", (-1, 10)),
        ("label", "INT64", (-1,)),
    }


def test_version_metadata_and_readiness(api: TestClient) -> None:
    for spelling in ("v0001", "1"):  # Triton's clients send the number
        body = api.get(f"/v2/models/mnist/versions/{spelling}").json()
        assert body["version"] == "v0001" and body["name"] == "mnist"
        ready = api.get(f"/v2/models/mnist/versions/{spelling}/ready")
        assert ready.json() == {"name": "mnist", "version": "v0001", "ready": True}
    assert api.get("/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}


def test_unknown_models_and_versions_are_a_404(api: TestClient) -> None:
    for path in (
        "/v2/models/fashion",
        "/v2/models/fashion/ready",
        "/v2/models/fashion/versions/v0001",
        "/v2/models/mnist/versions/v0009",
        "/v2/models/mnist/versions/v0009/ready",
    ):
        assert_v2_error(api.get(path), 404)
    for name in (
        "abc",
        "01",
        "0001",
        "v1",
        "V0001",
    ):  # not a name (registry.parse_version) nor Triton's number
        assert_v2_error(api.get(f"/v2/models/mnist/versions/{name}"), 404)


# -- inference -----------------------------------------------------------------------------------


def test_infer_fp32_and_uint8_agree(api: TestClient, images: np.ndarray) -> None:
    as_floats = outputs_of(api.post(INFER, json={**fp32(images), "id": "req-1"}))
    as_bytes = outputs_of(api.post(INFER, json=uint8(images)))

    for outputs in (as_floats, as_bytes):
        probabilities = outputs["probabilities"]
        assert probabilities["datatype"] == "FP32" and probabilities["shape"] == [4, 10]
        p = np.array(probabilities["data"]).reshape(4, 10)
        assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
        label = outputs["label"]
        assert label["datatype"] == "INT64" and label["shape"] == [4]
        assert label["data"] == p.argmax(axis=1).tolist()
    assert as_floats["label"]["data"] == as_bytes["label"]["data"] == [0, 3, 7, 9]
    assert np.allclose(as_floats["probabilities"]["data"], as_bytes["probabilities"]["data"], atol=1e-5)


def test_infer_answers_with_the_model_and_the_request_id(api: TestClient, images: np.ndarray) -> None:
    body = api.post(INFER, json={**uint8(images[:1]), "id": "req-7"}).json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("mnist", "v0001", "req-7")


def test_infer_on_a_given_version(
    make_client: MakeClient, publish: Publish, trained_net: Any, images: np.ndarray
) -> None:
    publish()
    publish(variant(trained_net, seed=4), promote=False)
    with make_client() as client:
        for spelling, served in (("v0002", "v0002"), ("1", "v0001")):
            response = client.post(f"/v2/models/mnist/versions/{spelling}/infer", json=uint8(images))
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == served
            assert outputs_of(response)["label"]["data"] == [0, 3, 7, 9]
        assert_v2_error(client.post("/v2/models/mnist/versions/v0003/infer", json=uint8(images)), 404)


def test_requested_outputs_only(api: TestClient, images: np.ndarray) -> None:
    for wanted in (["label"], ["probabilities"], ["label", "probabilities"]):
        request = {**uint8(images), "outputs": [{"name": name} for name in wanted]}
        assert set(outputs_of(api.post(INFER, json=request))) == set(wanted)


def fp32_tensor(data: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": data}]}


def bad_requests(images: np.ndarray) -> dict[str, Any]:
    good = uint8(images)
    tensor = good["inputs"][0]

    def with_tensor(**change: Any) -> dict[str, Any]:
        return {"inputs": [{**tensor, **change}]}

    return {
        "shape_784_as_uint8": with_tensor(shape=[4, 784]),
        "shape_27": with_tensor(shape=[4, 28, 27]),
        "shape_flat": with_tensor(shape=[3136]),
        "shape_not_a_list": with_tensor(shape="4,28,28"),
        "batch_zero": with_tensor(shape=[0, 28, 28], data=[]),
        "batch_negative": with_tensor(shape=[-1, 28, 28]),
        "batch_too_big": with_tensor(shape=[1025, 28, 28]),
        "datatype_int32": with_tensor(datatype="INT32"),
        "datatype_missing": {"inputs": [{k: v for k, v in tensor.items() if k != "datatype"}]},
        "count_short": with_tensor(data=tensor["data"][:-1]),
        "count_long": with_tensor(data=[*tensor["data"], 0]),
        "uint8_out_of_range": with_tensor(data=[256, *tensor["data"][1:]]),
        "uint8_negative": with_tensor(data=[-1, *tensor["data"][1:]]),
        "uint8_fraction": with_tensor(data=[0.5, *tensor["data"][1:]]),
        "fp32_scaled_0_255": fp32_tensor([255.0] * 784),
        "fp32_negative": fp32_tensor([-0.5] * 784),
        "fp32_overflows_float32": fp32_tensor([1e39, -1e39] * 392),  # finite in JSON, inf as float32
        "data_strings": with_tensor(data=["x"] * len(tensor["data"])),
        "data_ragged": with_tensor(data=[[1, 2], [3]]),
        "data_object": with_tensor(data={"a": 1}),
        "no_inputs": {"outputs": []},
        "two_inputs": {"inputs": [tensor, tensor]},
        "input_not_object": {"inputs": [5]},
        "body_a_list": [tensor],
        "unknown_output": {**good, "outputs": [{"name": "logits"}]},
        "outputs_not_a_list": {**good, "outputs": 5},
        "output_name_not_a_string": {**good, "outputs": [{"name": ["label"]}]},
    }


def test_bad_requests_are_a_400(api: TestClient, images: np.ndarray) -> None:
    for case, request in bad_requests(images).items():
        response = api.post(INFER, json=request)
        assert response.status_code == 400, (case, response.text)
        assert len(assert_v2_error(response, 400)) < 500, case


def test_nan_and_infinity_are_a_400(api: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):  # not JSON, though Python's json reads them
        data = ", ".join([literal] + ["0.5"] * 783)
        body = f'{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [{data}]}}]}}'
        message = assert_v2_error(
            api.post(INFER, content=body, headers={"Content-Type": "application/json"}), 400
        )
        assert "not valid JSON" in message and "binary" not in message
    for value in ("1e400", "-1e400"):  # past float64 (past float32, 1e39, is out of 0..1)
        data = ", ".join([value] + ["0.5"] * 783)
        body = f'{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [{data}]}}]}}'
        assert "not valid JSON" in assert_v2_error(api.post(INFER, content=body), 400)


def test_invalid_json_is_a_400(api: TestClient) -> None:
    for body in (b"", b"{", b"not json", b"\xff\xfe\x00", json.dumps({"inputs": "x"}).encode()):
        response = api.post(INFER, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (body, response.text)
        assert_v2_error(response, 400)


def test_an_unknown_model_is_a_404(api: TestClient, images: np.ndarray) -> None:
    message = assert_v2_error(api.post("/v2/models/fashion/infer", json=uint8(images)), 404)
    assert "fashion" in message


def test_infer_counts_predictions_but_not_refused_requests(api: TestClient, images: np.ndarray) -> None:
    registry = api.app.state.services.metrics.registry
    assert api.post(INFER, json={**uint8(images), "outputs": [{"name": "logits"}]}).status_code == 400
    assert registry.get_sample_value("mnist_predictions_total", {"digit": "7"}) is None

    assert api.post(INFER, json=uint8(images)).status_code == 200
    assert registry.get_sample_value("mnist_predictions_total", {"digit": "7"}) == 1


def test_a_damaged_version_gets_the_status_every_other_route_gives_it(
    make_client: MakeClient, publish: Publish, trained_net: Any, tamper: Any, images: np.ndarray
) -> None:
    publish()
    publish(variant(trained_net, seed=5), promote=False)
    tamper("v0002")
    with make_client() as client:
        main = client.get("/weights/w1.png", params={"version": "v0002"})
        assert (main.status_code, main.json()["error"]) == (409, "corrupt_version")
        for response in (
            client.get("/v2/models/mnist/versions/v0002"),
            client.post("/v2/models/mnist/versions/v0002/infer", json=uint8(images)),
        ):
            assert "v0002" in assert_v2_error(response, 409)


# -- the binary tensor data extension, byte by byte --------------------------------------------

HEADER = "Inference-Header-Content-Length"


def binary_request(
    header: dict[str, Any], data: bytes, json_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    length = len(text) if json_length is None else json_length
    return text + data, {HEADER: str(length), "Content-Type": "application/octet-stream"}


def binary_tensor(datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {"name": "input", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


def split_answer(response: Any) -> tuple[dict[str, Any], bytes]:
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER])
    return json.loads(response.content[:length]), response.content[length:]


def test_binary_in_binary_out(api: TestClient, images: np.ndarray) -> None:
    pixels = (images.reshape(4, 784) / 255).astype("<f4")
    body, headers = binary_request(
        {
            "id": "b-1",
            "inputs": [binary_tensor("FP32", [4, 784], pixels.nbytes)],
            "parameters": {"binary_data_output": True},
        },
        pixels.tobytes(),
    )
    response = api.post(INFER, content=body, headers=headers)

    assert response.headers["content-type"] == "application/octet-stream"
    answer, data = split_answer(response)
    assert answer["id"] == "b-1" and "parameters" not in answer  # binary_data_output is not echoed
    assert [(o["name"], o["datatype"], o["shape"]) for o in answer["outputs"]] == [
        ("probabilities", "FP32", [4, 10]),
        ("label", "INT64", [4]),
    ]
    assert [o["parameters"]["binary_data_size"] for o in answer["outputs"]] == [160, 32]
    assert len(data) == 192
    probabilities = np.frombuffer(data[:160], "<f4").reshape(4, 10)
    assert np.frombuffer(data[160:], "<i8").tolist() == [0, 3, 7, 9]
    as_json = outputs_of(api.post(INFER, json=fp32(images)))
    assert np.allclose(probabilities, np.array(as_json["probabilities"]["data"]).reshape(4, 10), atol=1e-6)


def test_binary_uint8_in_json_out(api: TestClient, images: np.ndarray) -> None:
    body, headers = binary_request(
        {"inputs": [binary_tensor("UINT8", [4, 28, 28], images.size)]}, images.tobytes()
    )
    response = api.post(INFER, content=body, headers=headers)

    assert response.headers["content-type"] == "application/json" and HEADER not in response.headers
    assert outputs_of(response)["label"]["data"] == [0, 3, 7, 9]


def test_one_output_binary_the_other_json(api: TestClient, images: np.ndarray) -> None:
    request = {
        **uint8(images),
        "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    answer, data = split_answer(api.post(INFER, json=request))
    label, probabilities = answer["outputs"]
    assert label["data"] == [0, 3, 7, 9] and "parameters" not in label
    assert probabilities["parameters"] == {"binary_data_size": 160} and len(data) == 160
    # an output's own false overrides the request's binary_data_output
    request = {**request, "parameters": {"binary_data_output": True}}
    request["outputs"][1]["parameters"]["binary_data"] = False
    answer = api.post(INFER, json=request)
    assert answer.headers["content-type"] == "application/octet-stream"
    answer, data = split_answer(answer)
    assert answer["outputs"][1]["data"] and len(data) == 32


def test_the_request_parameters_are_echoed(api: TestClient, images: np.ndarray) -> None:
    body = api.post(INFER, json={**uint8(images[:1]), "parameters": {"trace": "x", "k": [1, 2]}}).json()
    assert body["parameters"] == {"trace": "x", "k": [1, 2]}
    assert "parameters" not in api.post(INFER, json=uint8(images[:1])).json()


def bad_binary_requests(images: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    data = images.tobytes()
    good = {"inputs": [binary_tensor("UINT8", [4, 28, 28], len(data))]}
    nan = np.full((1, 784), np.nan, "<f4")
    big = np.full((1, 784), 2.0, "<f4")
    body, _ = binary_request(good, data)
    return {
        "no header": (body, {"Content-Type": "application/octet-stream"}),
        "header not a number": (body, {HEADER: "abc"}),
        "header negative": (body, {HEADER: "-1"}),
        "header past the body": (body, {HEADER: str(len(body) + 1)}),
        "header cuts the json": binary_request(good, data, json_length=10),
        "size too small": binary_request({"inputs": [binary_tensor("UINT8", [4, 28, 28], 5)]}, data),
        "size not an int": binary_request({"inputs": [binary_tensor("UINT8", [4, 28, 28], "3136")]}, data),
        "bytes short": binary_request(good, data[:-1]),
        "bytes long": binary_request(good, data + b"\0"),
        "bytes but no binary input": binary_request(uint8(images), b"\0" * 8),
        "data and binary": binary_request({"inputs": [{**good["inputs"][0], "data": [0] * 3136}]}, data),
        "fp32 NaN": binary_request({"inputs": [binary_tensor("FP32", [1, 784], nan.nbytes)]}, nan.tobytes()),
        "fp32 over 1": binary_request(
            {"inputs": [binary_tensor("FP32", [1, 784], big.nbytes)]}, big.tobytes()
        ),
        "shared memory": binary_request(
            {"inputs": [{**good["inputs"][0], "parameters": {"shared_memory_region": "r"}}]}, b""
        ),
        "binary_data not a bool": binary_request(
            {**good, "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]}, data
        ),
        "binary_data_output not a bool": binary_request(
            {**good, "parameters": {"binary_data_output": 1}}, data
        ),
        "classification": binary_request(
            {**good, "outputs": [{"name": "label", "parameters": {"classification": 3}}]}, data
        ),
        "an output twice": binary_request({**good, "outputs": [{"name": "label"}, {"name": "label"}]}, data),
        "id not a string": binary_request({**good, "id": 5}, data),
        "parameters not an object": binary_request({**good, "parameters": [1]}, data),
        "parameters with NaN": (
            b'{"parameters": {"x": NaN}, "inputs": [{"name": "input", "datatype": "UINT8", '
            b'"shape": [1, 28, 28], "data": [' + b"0, " * 783 + b"0]}]}",
            {},
        ),
    }


def test_bad_binary_requests_are_a_400(api: TestClient, images: np.ndarray) -> None:
    for case, (body, headers) in bad_binary_requests(images).items():
        response = api.post(INFER, content=body, headers=headers)
        assert response.status_code == 400, (case, response.text)
        assert len(assert_v2_error(response, 400)) < 500, case


def test_a_binary_body_without_the_header_says_what_is_missing(api: TestClient, images: np.ndarray) -> None:
    body, _ = binary_request({"inputs": [binary_tensor("UINT8", [4, 28, 28], images.size)]}, images.tobytes())
    message = assert_v2_error(api.post(INFER, content=body), 400)
    assert HEADER in message


# -- gzip and deflate bodies (tritonclient's compression options) -------------------------------


def test_gzip_and_deflate_bodies_both_ways(api: TestClient, images: np.ndarray) -> None:
    many = np.tile(images, (8, 1, 1))  # an answer over 1 KiB: compressed when asked
    plain = json.dumps(fp32(many)).encode()
    expected = outputs_of(api.post(INFER, json=fp32(many)))["label"]["data"]
    assert expected == [0, 3, 7, 9] * 8
    for coding, packed in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain))):
        response = api.post(
            INFER, content=packed, headers={"Content-Encoding": coding, "Accept-Encoding": coding}
        )
        assert response.headers["content-encoding"] == coding  # httpx inflated it for .content
        assert outputs_of(response)["label"]["data"] == expected
    # binary tensors inside a gzip body: the header counts the JSON of the inflated body
    data = images.tobytes()
    body, headers = binary_request({"inputs": [binary_tensor("UINT8", [4, 28, 28], len(data))]}, data)
    response = api.post(INFER, content=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"})
    assert outputs_of(response)["label"]["data"] == [0, 3, 7, 9]


def test_a_short_answer_is_not_compressed_and_no_is_respected(api: TestClient, images: np.ndarray) -> None:
    one = api.post(INFER, json=uint8(images[:1]), headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in one.headers  # under 1 KiB
    refused = api.post(
        INFER, json=fp32(np.tile(images, (8, 1, 1))), headers={"Accept-Encoding": "gzip;q=0, identity"}
    )
    assert "content-encoding" not in refused.headers


def test_bad_compressed_bodies(make_client: MakeClient, publish: Publish, images: np.ndarray) -> None:
    publish()
    with make_client(max_v2_body_bytes=64 * 1024) as client:
        bomb = gzip.compress(b" " * (10 * 1024 * 1024))  # 10 MiB of spaces in ~10 kB
        cases = [
            (gzip.compress(b"{}")[:-4], "gzip", 400),  # cut short
            (b"not gzip at all", "gzip", 400),
            (b"{}", "br", 415),
            (bomb, "gzip", 413),
        ]
        for body, coding, status in cases:
            response = client.post(INFER, content=body, headers={"Content-Encoding": coding})
            assert len(assert_v2_error(response, status)) < 300, (coding, status)
