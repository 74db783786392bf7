"""A cluster's corrections train on its workers: feedback stored in PostgreSQL by any replica is what a
job with `extra_data: feedback` reads on a real `python -m trainer worker`, and its version's manifest
says so."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.pgstore import PgFeedbackStore
from registry import Registry
from tests.cluster.test_workers import setup, wait_until  # noqa: F401  (setup: the workers' fixture)
from trainer.config import preset

pytestmark = pytest.mark.cluster


def test_a_job_on_a_worker_trains_on_the_clusters_feedback(setup, digits, database_url):  # noqa: F811
    store = PgFeedbackStore(database_url)
    try:
        images, labels = digits(20, seed=5)
        for image, label in zip(images, labels, strict=True):
            store.add(image.reshape(28, 28), int(label), version="v0001", answer=0, confidence=0.5)
    finally:
        store.close()
    queue = setup["queue"]
    setup["start_worker"]("a")
    logs = [log for _, log in setup["workers"]]
    params = {"preset": "fast", "epochs": 1, "hidden": [16], "val_size": 200, "extra_data": "feedback",
              "feedback_weight": 3}  # fmt: skip
    config = preset("fast").replace(epochs=1, hidden=(16,), val_size=200).validate()
    job = queue.submit(params, config)["id"]
    record = wait_until(
        lambda: (r := queue.db.get(job))["state"] in ("succeeded", "failed") and r, 120, "the job", logs
    )
    assert record["state"] == "succeeded", record
    used = Registry(setup["models"]).manifest(record["version"])["feedback"]
    assert used["source"] == "PostgreSQL (feedback_samples)" and used["samples"] == 20
    assert (used["train_samples"], used["holdout_samples"], used["weight"]) == (16, 4, 3)
    assert 0 <= used["holdout_accuracy"] <= 1 and np.isfinite(used["holdout_accuracy"])
