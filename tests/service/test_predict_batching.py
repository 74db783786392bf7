"""The /predict batcher: a lone call runs at once; calls that arrive in the same loop turn share a pass."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from conftest import DigitImage, MakeClient, Publish
from prometheus_client.parser import text_string_to_metric_families

from mlp import MLP
from service.batcher import PredictBatcher
from service.loaded_model import LoadedModel
from service.metrics import Metrics


class CountingNet:
    """An MLP that records the number of rows of every pass (and can be made to fail)."""

    def __init__(self, seed: int, fail: bool = False):
        self.net = MLP([784, 16, 10], rng=np.random.default_rng(seed))
        self.passes: list[int] = []
        self.fail = fail

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        self.passes.append(len(pixels))
        if self.fail:
            raise FloatingPointError("the network failed")
        return self.net.infer(pixels)


def model(seed: int, version: str = "v0001", fail: bool = False) -> LoadedModel:
    """A served version whose network counts its passes (duck-typed in place of an MLP)."""
    return LoadedModel(version, CountingNet(seed, fail), {})


def digits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def batched_requests(exposition: str) -> list[float]:
    """The batch-size histogram's counts, read from the Prometheus text format."""
    for family in text_string_to_metric_families(exposition):
        if family.name == "mnist_predict_batch_requests":
            return [s.value for s in family.samples if s.name.endswith("_count")]
    raise AssertionError("no mnist_predict_batch_requests metric")


def test_a_lone_call_in_each_turn_runs_at_once_and_alone() -> None:
    metrics, m = Metrics(), model(0)
    batcher = PredictBatcher(metrics)

    async def one_per_turn() -> list[np.ndarray]:
        answers = []
        for i in range(3):
            answers.append(await batcher.answer(m, digits(1 + i, i)))
            await asyncio.sleep(0)  # the next request arrives in a later turn
        return answers

    answers = asyncio.run(one_per_turn())
    assert m.net.passes == [1, 2, 3]
    for i, got in enumerate(answers):
        np.testing.assert_array_equal(got.probabilities, m.net.net.predict_proba(digits(1 + i, i)))
    assert batched_requests(metrics.exposition().decode()) == [0]


def test_calls_of_one_turn_after_the_first_share_one_pass() -> None:
    metrics, m = Metrics(), model(1)
    batcher = PredictBatcher(metrics)
    sizes = [1, 2, 1, 3, 1]

    async def together() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.answer(m, digits(n, i)) for i, n in enumerate(sizes)))

    answers = asyncio.run(together())
    assert m.net.passes == [1, 7]  # the first alone, the other four in one pass
    for i, (n, got) in enumerate(zip(sizes, answers, strict=True)):
        assert got.probabilities.shape == (n, 10)
        np.testing.assert_allclose(
            got.probabilities, m.net.net.predict_proba(digits(n, i)), rtol=1e-5, atol=1e-7
        )
    assert batched_requests(metrics.exposition().decode()) == [1]


def test_each_version_in_a_batch_gets_its_own_pass() -> None:
    batcher = PredictBatcher(Metrics())
    a, b = model(2, "v0001"), model(3, "v0002")

    async def mixed() -> list[np.ndarray]:
        calls = [(a, 1), (b, 2), (a, 3), (b, 4)]
        return await asyncio.gather(*(batcher.answer(m, digits(n, n)) for m, n in calls))

    answers = asyncio.run(mixed())
    assert a.net.passes == [1, 3] and b.net.passes == [6]
    np.testing.assert_allclose(
        answers[1].probabilities, b.net.net.predict_proba(digits(2, 2)), rtol=1e-5, atol=1e-7
    )


def test_a_failing_pass_fails_every_request_that_shared_it() -> None:
    batcher = PredictBatcher(Metrics())
    broken = model(4, fail=True)

    async def together() -> list[object]:
        calls = (batcher.answer(broken, digits(1, i)) for i in range(4))
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(together())
    assert [type(o) for o in outcomes] == [FloatingPointError] * 4


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_uploads_get_the_answers_of_sequential_ones(
    make_client: MakeClient, publish: Publish, digit_image: DigitImage, batching: bool
) -> None:
    """Through the whole app: 24 requests in flight at once, batched or not, read each digit right."""
    publish()
    # 200x200: decoded at once on the loop. A larger upload is decoded on the pool, whose threads
    # finish one at a time, so its requests reach the network in turns of their own.
    images = [digit_image(i % 10, side=200) for i in range(24)]
    with make_client(predict_batching=batching) as client:
        sequential = [
            client.post("/predict", content=png, headers={"Content-Type": "image/png"}) for png in images
        ]

        async def concurrent() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                posts = (
                    http.post("/predict", content=png, headers={"Content-Type": "image/png"})
                    for png in images
                )
                return await asyncio.gather(*posts)

        together = client.portal.call(concurrent)
        metrics = client.get("/metrics").text
    for one, other in zip(sequential, together, strict=True):
        assert one.status_code == other.status_code == 200
        a, b = one.json()["predictions"][0], other.json()["predictions"][0]
        assert a["digit"] == b["digit"]
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=2e-6)
    assert [p.json()["predictions"][0]["digit"] for p in together] == [i % 10 for i in range(24)]
    batches = batched_requests(metrics)
    assert (batches[0] > 0) is batching


def test_bytes_and_floats_share_a_pass_scaled_alike() -> None:
    """V2 FP32 rows (0..1) join /predict's and V2 UINT8's (0..255): all read as the network reads them."""
    metrics, m = Metrics(), model(5)
    batcher = PredictBatcher(metrics)
    parts = [digits(1, 0), digits(2, 1), (digits(3, 2).reshape(3, 784) / 255).astype(np.float32)]

    async def together() -> list[object]:
        return await asyncio.gather(batcher.answer(m, parts[0]), *(batcher.answer(m, p) for p in parts))

    answers = asyncio.run(together())
    assert m.net.passes == [1, 6]
    for part, got in zip([parts[0], *parts], answers, strict=True):
        np.testing.assert_allclose(got.probabilities, m.net.net.predict_proba(part), rtol=1e-5, atol=1e-7)


def test_v2_and_predict_requests_in_flight_together_share_passes(
    make_client: MakeClient, publish: Publish, digit_image: DigitImage
) -> None:
    """Through the whole app: /predict uploads and V2 requests (JSON FP32, JSON UINT8) at once."""
    publish()
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    v2_fp32 = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [3, 784], "data": (pixels / 255).ravel().tolist()}
        ]
    }
    v2_uint8 = {
        "inputs": [{"name": "x", "datatype": "UINT8", "shape": [3, 28, 28], "data": pixels.ravel().tolist()}]
    }
    with make_client() as client:
        alone = client.post("/v2/models/mnist/infer", json=v2_uint8).json()["outputs"][0]["data"]

        async def concurrent() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                calls = []
                for i in range(8):
                    calls.append(http.post("/v2/models/mnist/infer", json=(v2_fp32, v2_uint8)[i % 2]))
                    png = digit_image(i)
                    calls.append(http.post("/predict", content=png, headers={"Content-Type": "image/png"}))
                return await asyncio.gather(*calls)

        together = client.portal.call(concurrent)
        metrics = client.get("/metrics").text
    assert all(r.status_code == 200 for r in together), [r.text for r in together if r.status_code != 200]
    for response in together[::2]:
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], alone, atol=2e-6)
    assert [r.json()["predictions"][0]["digit"] for r in together[1::2]] == list(range(8))
    assert batched_requests(metrics)[0] > 0


def test_a_v2_request_of_32_rows_or_more_runs_its_own_pass(make_client: MakeClient, publish: Publish) -> None:
    """Its rows already share the weight reads; joining others would only make a slower, larger pass."""
    publish()
    pixels = np.random.default_rng(1).integers(0, 256, (32, 28, 28), dtype=np.uint8).ravel().tolist()
    request = {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [32, 28, 28], "data": pixels}]}
    with make_client() as client:

        async def concurrent() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await asyncio.gather(
                    *(http.post("/v2/models/mnist/infer", json=request) for _ in range(6))
                )

        together = client.portal.call(concurrent)
        metrics = client.get("/metrics").text
    assert [r.status_code for r in together] == [200] * 6
    assert batched_requests(metrics) == [0]
