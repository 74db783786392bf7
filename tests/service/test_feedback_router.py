"""POST /feedback (open), GET /feedback and /feedback/export (token), against a real app and SQLite file."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
from conftest import AUTH, DigitImage, MakeClient, Publish

from feedback import FeedbackStore
from trainer.idx import parse_idx


def predict(client, digit_image: DigitImage, k: int) -> dict:
    response = client.post("/predict", files={"file": ("d.png", digit_image(k), "image/png")})
    assert response.status_code == 200
    return response.json()["predictions"][0]


def test_feedback_by_id_stores_what_the_network_saw(api, digit_image: DigitImage, tmp_path) -> None:
    answer = client_answer = api.post(
        "/predict?debug=1", files={"file": ("d.png", digit_image(3), "image/png")}
    ).json()["predictions"][0]
    assert len(client_answer["id"]) == 16
    response = api.post("/feedback", json={"id": answer["id"], "digit": 5})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["digit"] == 5 and body["version"] == "v0001" and body["answer"] == answer["digit"]
    assert body["correct"] is (answer["digit"] == 5)
    samples = FeedbackStore(tmp_path / "state" / "feedback.sqlite3").samples()
    assert [(s.id, s.label, s.version, s.answer) for s in samples] == [
        (body["id"], 5, "v0001", answer["digit"])
    ]
    assert samples[0].pixels.tolist() == answer["input"]  # exactly the 28x28 /predict read
    assert samples[0].confidence == answer["confidence"]
    # an id is used once
    again = api.post("/feedback", json={"id": answer["id"], "digit": 5})
    assert again.status_code == 404 and again.json()["error"] == "feedback_id_unknown"


def test_feedback_by_image_reads_it_with_the_current_version(api, digit_image: DigitImage) -> None:
    answer = predict(api, digit_image, 4)
    response = api.post("/feedback?digit=4", files={"file": ("d.png", digit_image(4), "image/png")})
    assert response.status_code == 201, response.text
    assert response.json() | {"id": 0} == {
        "id": 0, "digit": 4, "version": "v0001", "answer": answer["digit"], "correct": answer["digit"] == 4,
    }  # fmt: skip
    raw = api.post("/feedback?digit=2", content=digit_image(2), headers={"Content-Type": "image/png"})
    assert raw.status_code == 201 and raw.json()["digit"] == 2
    # an unknown id with an image: the image counts
    both = api.post(
        "/feedback?digit=1&id=nope", content=digit_image(1), headers={"Content-Type": "image/png"}
    )
    assert both.status_code == 201


def test_metrics_count_feedback_by_version_and_verdict(api, digit_image: DigitImage) -> None:
    answer = predict(api, digit_image, 6)
    right, wrong = answer["digit"], (answer["digit"] + 1) % 10
    assert api.post("/feedback", json={"id": answer["id"], "digit": right}).status_code == 201
    answer = predict(api, digit_image, 6)
    assert api.post("/feedback", json={"id": answer["id"], "digit": wrong}).status_code == 201
    text = api.get("/metrics").text
    assert 'mnist_feedback_total{model="mnist",verdict="correct",version="v0001"} 1.0' in text
    assert 'mnist_feedback_total{model="mnist",verdict="wrong",version="v0001"} 1.0' in text


def test_bad_feedback_is_a_4xx_with_a_json_body(api, digit_image: DigitImage) -> None:
    cases = [
        ({"json": {"id": "x", "digit": 10}}, 422),
        ({"json": {"id": "x", "digit": "7"}}, 422),
        ({"json": {"id": "", "digit": 7}}, 422),
        ({"json": {"id": "x" * 65, "digit": 7}}, 422),
        ({"json": {"id": "x", "digit": 7, "more": 1}}, 422),
        ({"json": {"id": "unknown", "digit": 7}}, 404),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 422),
        ({"content": b"[" * 5000, "headers": {"Content-Type": "application/json"}}, 413),
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"files": {"file": ("d.png", digit_image(1), "image/png")}}, 422),  # no ?digit=
        (
            {
                "content": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
                "headers": {"Content-Type": "image/png"},
                "params": {"digit": 1},
            },
            400,
        ),
        ({"content": digit_image(1), "headers": {"Content-Type": "image/png"}, "params": {"digit": 11}}, 422),
    ]
    for kwargs, status in cases:
        response = api.post("/feedback", **kwargs)
        assert response.status_code == status, (kwargs.get("json"), response.text)
        assert set(response.json()) == {"error", "detail"}


def test_one_address_is_rate_limited(
    make_client: MakeClient, publish: Publish, digit_image: DigitImage
) -> None:
    publish()
    with make_client(feedback_per_minute=3) as client:
        statuses = [client.post("/feedback", json={"id": "nope", "digit": 1}).status_code for _ in range(5)]
        assert statuses == [404, 404, 404, 429, 429]
        limited = client.post("/feedback", json={"id": "nope", "digit": 1})
        assert limited.json()["error"] == "too_many_requests" and int(limited.headers["Retry-After"]) >= 1


def test_retention_keeps_the_newest(
    make_client: MakeClient, publish: Publish, digit_image: DigitImage
) -> None:
    publish()
    with make_client(feedback_max_samples=3) as client:
        for k in range(5):
            assert client.post(f"/feedback?digit={k}", content=digit_image(k),
                               headers={"Content-Type": "image/png"}).status_code == 201  # fmt: skip
        page = client.get("/feedback", headers=AUTH).json()
        assert page["total"] == 3 and [s["digit"] for s in page["samples"]] == [4, 3, 2]


def test_listing_and_export_need_the_token_and_page(api, digit_image: DigitImage) -> None:
    assert api.get("/feedback").status_code == 401
    assert api.get("/feedback/export", headers={"Authorization": "Bearer wrong"}).status_code == 403
    empty = api.get("/feedback", headers=AUTH).json()
    assert empty == {"total": 0, "offset": 0, "limit": 50, "next_offset": None, "samples": []}
    for k in (1, 2, 3):
        api.post(f"/feedback?digit={k}", content=digit_image(k), headers={"Content-Type": "image/png"})
    first = api.get("/feedback?limit=2", headers=AUTH).json()
    assert [s["digit"] for s in first["samples"]] == [3, 2] and first["next_offset"] == 2
    assert first["samples"][0]["pixels"] is None
    rest = api.get("/feedback?limit=2&offset=2&pixels=1", headers=AUTH).json()
    assert [s["digit"] for s in rest["samples"]] == [1] and rest["next_offset"] is None
    assert np.asarray(rest["samples"][0]["pixels"]).shape == (28, 28)

    export = api.get("/feedback/export", headers=AUTH)
    assert export.status_code == 200 and export.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
        images = parse_idx(gzip.decompress(archive.read("feedback-images-idx3-ubyte.gz")), "images")
        labels = parse_idx(gzip.decompress(archive.read("feedback-labels-idx1-ubyte.gz")), "labels")
        rows = archive.read("samples.csv").decode().splitlines()
    assert images.shape == (3, 28, 28) and labels.tolist() == [1, 2, 3]
    assert images[0].tolist() == rest["samples"][0]["pixels"]
    assert rows[0] == "id,label,version,answer,confidence,created_at" and len(rows) == 4


def test_in_cluster_mode_feedback_goes_to_postgresql(
    make_client: MakeClient, publish: Publish, digit_image: DigitImage, database_url: str
) -> None:
    from feedback.pgstore import PgFeedbackStore
    from trainer.feedback_data import feedback_mix

    publish()
    with make_client(database_url=database_url) as client:
        answer = predict(client, digit_image, 5)
        assert client.post("/feedback", json={"id": answer["id"], "digit": 5}).status_code == 201
        assert (
            client.post(
                "/feedback?digit=3", content=digit_image(3), headers={"Content-Type": "image/png"}
            ).status_code
            == 201
        )
        assert client.get("/feedback", headers=AUTH).json()["total"] == 2
    store = PgFeedbackStore(database_url)  # what every replica and worker reads
    try:
        assert [s.label for s in store.samples()] == [5, 3]
    finally:
        store.close()
    mix = feedback_mix("feedback", weight=2, holdout=0.5, seed=0, database_url=database_url)
    assert (mix.samples, len(mix.y_train), len(mix.y_holdout)) == (2, 2, 1)
    assert mix.source.startswith("PostgreSQL")
