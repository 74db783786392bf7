"""The V2 routes as NVIDIA's `tritonclient` speaks to them, with its defaults, over real TCP.

One `python -m service` under uvicorn on 127.0.0.1 serves two versions for the whole module; every
test calls it through `tritonclient.http` as a user switching from Triton would (binary tensors by
default, JSON when asked), and checks the answers against the same network run here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from conftest import CLASSES, TOKEN, digit_pixels, variant
from testkit import start_service
from tritonclient.utils import InferenceServerException

from images import digitize_array
from mlp import MLP
from registry import Registry

START_DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def versions(trained_net: MLP) -> dict[str, MLP]:
    """The networks the server serves: v0001 (current) and v0002 (published, not promoted)."""
    return {"v0001": trained_net, "v0002": variant(trained_net, seed=4, scale=0.05)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, versions: dict[str, MLP]) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("triton")
    registry = Registry(folder / "models", "mnist")
    manifest = {"test_accuracy": 0.9, "preset": "test", "dataset": {"name": "synthetic", "classes": CLASSES}}
    for name, net in versions.items():
        assert registry.publish(net, manifest) == name
    registry.promote("v0001")
    process, port, log = start_service(folder, folder / "models", folder / "data", TOKEN)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the service did not become ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server, connection_timeout=10, network_timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """256 digits as the network sees them: (256, 28, 28) uint8, the ten prototypes with noise."""
    rng = np.random.default_rng(7)
    base = np.stack([digitize_array(np.asarray(digit_pixels(k))) for k in range(10)]).astype(np.int16)
    picked = base[np.arange(256) % 10]
    noise = rng.integers(-30, 30, picked.shape) * (rng.random(picked.shape) < 0.05)
    return np.clip(picked + noise, 0, 255).astype(np.uint8)


def fp32_input(images: np.ndarray, binary: bool = True) -> triton.InferInput:
    pixels = (images.reshape(len(images), 784) / 255).astype(np.float32)
    tensor = triton.InferInput("input", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def uint8_input(images: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def expected(net: MLP, images: np.ndarray) -> np.ndarray:
    return net.predict_proba(images.reshape(len(images), 784))


def check(result: Any, net: MLP, images: np.ndarray, version: str = "v0001") -> None:
    probabilities = result.as_numpy("probabilities")
    labels = result.as_numpy("label")
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(images), 10)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    np.testing.assert_allclose(probabilities, expected(net, images), atol=1e-5)
    assert (labels == probabilities.argmax(axis=1)).all()
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("mnist", version)


@pytest.mark.parametrize("count", [1, 256])
def test_the_defaults_send_and_receive_binary_tensors(
    client: triton.InferenceServerClient, versions: dict[str, MLP], digits: np.ndarray, count: int
) -> None:
    images = digits[:count]
    result = client.infer("mnist", [fp32_input(images)])

    check(result, versions["v0001"], images)
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in result.get_response()["outputs"]}
    assert sizes == {"probabilities": count * 10 * 4, "label": count * 8}
    assert all("data" not in o for o in result.get_response()["outputs"])
    assert (result.as_numpy("label")[:10] == np.arange(min(count, 10))).all()


@pytest.mark.parametrize("count", [1, 256])
def test_json_tensors_both_ways(
    client: triton.InferenceServerClient, versions: dict[str, MLP], digits: np.ndarray, count: int
) -> None:
    images = digits[:count]
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("probabilities", "label")]
    for tensor in (fp32_input(images, binary=False), uint8_input(images, binary=False)):
        result = client.infer("mnist", [tensor], outputs=outputs)
        check(result, versions["v0001"], images)
        assert all("data" in o for o in result.get_response()["outputs"])


def test_uint8_binary_and_mixed_outputs(
    client: triton.InferenceServerClient, versions: dict[str, MLP], digits: np.ndarray
) -> None:
    outputs = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=True),
    ]
    result = client.infer("mnist", [uint8_input(digits)], outputs=outputs)

    check(result, versions["v0001"], digits)
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["label", "probabilities"]  # in the order asked


def test_only_the_requested_output(client: triton.InferenceServerClient, digits: np.ndarray) -> None:
    result = client.infer("mnist", [fp32_input(digits[:3])], outputs=[triton.InferRequestedOutput("label")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None
    assert result.as_numpy("label").tolist() == [0, 1, 2]


@pytest.mark.parametrize("spelling", ["v0002", "2"])
def test_a_version_pinned_request_is_answered_by_that_version(
    client: triton.InferenceServerClient, versions: dict[str, MLP], digits: np.ndarray, spelling: str
) -> None:
    for tensor in (fp32_input(digits), fp32_input(digits, binary=False)):
        result = client.infer("mnist", [tensor], model_version=spelling)
        check(result, versions["v0002"], digits, version="v0002")
    current = client.infer("mnist", [fp32_input(digits)]).as_numpy("probabilities")
    assert not np.allclose(current, result.as_numpy("probabilities"), atol=1e-4)  # another network


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_answers(
    client: triton.InferenceServerClient, versions: dict[str, MLP], digits: np.ndarray, algorithm: str
) -> None:
    for tensor in (fp32_input(digits), fp32_input(digits, binary=False)):
        result = client.infer(
            "mnist",
            [tensor],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        check(result, versions["v0001"], digits)


def test_the_id_and_parameters_come_back(client: triton.InferenceServerClient, digits: np.ndarray) -> None:
    result = client.infer(
        "mnist", [uint8_input(digits[:2])], request_id="req-42", parameters={"trace": "t-1", "n": 3}
    )
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["parameters"] == {"trace": "t-1", "n": 3}  # the extension's own are not echoed


def test_errors_reach_the_client_as_its_exception(
    client: triton.InferenceServerClient, digits: np.ndarray
) -> None:
    wrong_shape = triton.InferInput("input", [1, 783], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 783), np.float32))
    cases = [
        (lambda: client.infer("mnist", [wrong_shape]), "400", "shape"),
        (lambda: client.infer("fashion", [fp32_input(digits[:1])]), "404", "fashion"),
        (lambda: client.infer("mnist", [fp32_input(digits[:1])], model_version="9"), "404", "v0009"),
    ]
    for call, status, words in cases:
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == status
        assert words in caught.value.message()


def test_metadata_and_health(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", "v0002")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("mnist", "2")
    assert metadata["version"] == "v0002" and metadata["versions"] == ["v0001", "v0002"]
    assert {"name": "input", "datatype": "FP32", "shape": [-1, 784]} in metadata["inputs"]
    assert not client.is_model_ready("fashion")


def test_the_async_client_too(server: str, versions: dict[str, MLP], digits: np.ndarray) -> None:
    import asyncio

    import tritonclient.http.aio as triton_aio

    async def run() -> Any:
        client = triton_aio.InferenceServerClient(url=server)
        try:
            return await asyncio.gather(
                *(client.infer("mnist", [fp32_input(digits[i : i + 8])]) for i in range(0, 64, 8))
            )
        finally:
            await client.close()

    for i, result in enumerate(asyncio.run(run())):
        check(result, versions["v0001"], digits[8 * i : 8 * i + 8])
