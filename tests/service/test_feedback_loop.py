"""The feedback loop end to end, through the API and the real trainer, on data the test makes.

A version trained on the test's synthetic digits (tests/conftest.py) reads sevens with a second
bar drawn across them as nines. People correct 300 of them (POST /predict, then POST /feedback with
each answer's id); a training job with `extra_data: feedback` makes a version that reads such
sevens, fresh ones included, while its accuracy on the ordinary test digits drops by at most 0.1
point. Small network, few epochs: seconds of training.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import AUTH, MakeClient, prototypes
from fastapi.testclient import TestClient
from PIL import Image
from testkit import write_idx

BARRED = 300  # corrections sent
FRESH = 100  # barred sevens no correction was about
RECIPE = {"preset": "fast", "hidden": [64], "epochs": 3, "val_size": 0, "seed": 0}
DEADLINE_S = 120.0


def barred_sevens(n: int, seed: int) -> list[bytes]:
    """Sevens with a bar across the middle, as a person would draw them: dark ink on white PNGs."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(n):
        seven = prototypes()[7].copy()
        row, start = 14 + rng.integers(-1, 2), rng.integers(4, 9)
        seven[row : row + 2, start : start + 14] = 1.0  # the bar
        ink = np.clip(seven * rng.uniform(200, 255), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(255 - ink).save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    return pictures


def wait_for_job(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/train", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + DEADLINE_S
    while True:
        job = client.get(f"/train/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            assert job["state"] == "succeeded", job
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def read(client: TestClient, pictures: list[bytes], version: str) -> list[dict[str, Any]]:
    """/predict's answers for `pictures`, 50 per request, from `version`."""
    answers = []
    for at in range(0, len(pictures), 50):
        files = [("file", (f"{i}.png", p, "image/png")) for i, p in enumerate(pictures[at : at + 50])]
        response = client.post(f"/predict?version={version}", files=files)
        assert response.status_code == 200, response.text
        answers += response.json()["predictions"]
    return answers


@pytest.fixture
def tiny_digits(tmp_path: Path, digits) -> Path:
    folder = tmp_path / "digits"
    folder.mkdir()
    write_idx(folder, "train", *digits(2000, seed=0))
    write_idx(folder, "t10k", *digits(1000, seed=1))
    return folder


def test_corrections_make_a_version_that_reads_what_the_last_one_misread(
    make_client: MakeClient, tiny_digits: Path
) -> None:
    settings = {"data_dir": tiny_digits, "robustness_sample": 0, "feedback_per_minute": 10_000}
    with make_client(real_runner=True, **settings) as client:
        first = wait_for_job(client, {**RECIPE, "promote": True})["version"]
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        answers = read(client, barred_sevens(BARRED, seed=2), first)
        misread = sum(a["digit"] != 7 for a in answers)
        assert misread >= 0.9 * BARRED, f"{first} already reads barred sevens: {misread} misread"
        for answer in answers:  # people say what they were
            stored = client.post("/feedback", json={"id": answer["id"], "digit": 7})
            assert stored.status_code == 201, stored.text
        assert client.get("/feedback?limit=1", headers=AUTH).json()["total"] == BARRED

        second = wait_for_job(client, {**RECIPE, "extra_data": "feedback", "promote": False})["version"]
        old, new = (client.get(f"/models/{v}").json() for v in (first, second))
        assert new["feedback"]["samples"] == BARRED
        assert new["feedback"]["holdout_samples"] == BARRED // 5 and new["feedback"]["train_samples"] == 240
        assert new["feedback"]["weight"] == 10 and new["feedback"]["holdout_accuracy"] >= 0.95
        assert "feedback" not in old

        fresh = barred_sevens(FRESH, seed=3)
        assert sum(a["digit"] == 7 for a in read(client, fresh, second)) >= 0.95 * FRESH
        assert sum(a["digit"] == 7 for a in read(client, fresh, first)) <= 0.1 * FRESH
        # The ordinary test digits (1,000 of them): at most 0.1 point lost.
        assert new["test_accuracy"] >= old["test_accuracy"] - 0.001, (
            old["test_accuracy"],
            new["test_accuracy"],
        )
