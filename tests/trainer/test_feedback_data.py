"""Corrections as training data: read from the store, an export zip or its folder; held out; weighted;
and `python -m trainer train --extra-data` records them in the version's manifest."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from testkit import write_idx

from feedback import FeedbackStore
from feedback.export import export_zip
from trainer.cli import main
from trainer.feedback_data import FeedbackDataError, load_feedback, mix_feedback, resolve


def stored(path: Path, n: int) -> FeedbackStore:
    store = FeedbackStore(path)
    for i in range(n):
        store.add(
            np.full((28, 28), i, np.uint8), i % 10, version="v0001", answer=(i + 1) % 10, confidence=0.5
        )
    return store


def test_the_store_its_export_and_the_unzipped_export_read_the_same(tmp_path: Path) -> None:
    store = stored(tmp_path / "feedback.sqlite3", 12)
    archive = tmp_path / "feedback.zip"
    archive.write_bytes(export_zip(store.samples()))
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(archive).extractall(folder)
    images, labels = load_feedback(tmp_path / "feedback.sqlite3")
    assert (
        images.shape == (12, 784)
        and images.dtype == np.uint8
        and labels.tolist() == [i % 10 for i in range(12)]
    )
    for other in (archive, folder):
        again = load_feedback(other)
        assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)


def test_feedback_names_the_services_store_under_the_state_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MNIST_STATE_DIR", str(tmp_path))
    assert resolve("feedback") == tmp_path / "feedback.sqlite3"
    assert resolve("elsewhere/f.zip") == Path("elsewhere/f.zip")


@pytest.mark.parametrize("make", ["missing", "not_a_zip_of_feedback", "empty_store", "garbage"])
def test_unusable_feedback_is_one_clear_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "f"
    if make == "not_a_zip_of_feedback":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("other.txt", "x")
        path.write_bytes(buffer.getvalue())
    elif make == "empty_store":
        FeedbackStore(path)._create()
    elif make == "garbage":
        path.write_bytes(b"not sqlite, not zip" * 10)
    with pytest.raises(FeedbackDataError, match=str(path)):
        images, labels = load_feedback(path)
        mix_feedback(images, labels, source=str(path))


def test_a_seeded_share_is_held_out_and_the_rest_repeated() -> None:
    images = np.arange(10 * 784, dtype=np.int64).reshape(10, 784).astype(np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    mix = mix_feedback(images, labels, source="s", weight=3, holdout=0.3, seed=1)
    assert (mix.samples, mix.train_samples, len(mix.y_holdout)) == (10, 7, 3)
    assert len(mix.y_train) == 21 and sorted(set(mix.y_train.tolist()) | set(mix.y_holdout.tolist())) == list(
        range(10)
    )
    assert not set(mix.y_train.tolist()) & set(mix.y_holdout.tolist())  # held out means unseen
    assert np.array_equal(mix.x_train[:7], mix.x_train[7:14])
    same = mix_feedback(images, labels, source="s", weight=3, holdout=0.3, seed=1)
    assert np.array_equal(same.y_holdout, mix.y_holdout)
    with pytest.raises(FeedbackDataError):
        mix_feedback(images, labels, source="s", weight=0)
    with pytest.raises(FeedbackDataError):
        mix_feedback(images, labels, source="s", holdout=1.0)


def test_the_cli_trains_with_an_export_and_records_it_in_the_manifest(
    tmp_path: Path, digits, capsys, one_blas_thread
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_idx(data, "train", *digits(300, seed=0))
    write_idx(data, "t10k", *digits(100, seed=1))
    archive = tmp_path / "feedback.zip"
    archive.write_bytes(export_zip(stored(tmp_path / "feedback.sqlite3", 20).samples()))
    common = ["--data-dir", str(data), "--models-dir", str(tmp_path / "models"), "--hidden", "16"]
    common += ["--epochs", "1", "--val-size", "0", "--robustness-sample", "0", "--quiet"]
    status = main(["train", *common, "--extra-data", str(archive), "--feedback-weight", "4"])
    assert status == 0
    out = capsys.readouterr().out
    assert "feedback: 16 corrections trained on (x4), 4 held out: accuracy" in out
    [manifest_path] = sorted((tmp_path / "models" / "mnist").glob("v*.json"))[-1:]
    recorded = json.loads(manifest_path.read_text())["feedback"]
    assert recorded["source"] == str(archive) and recorded["samples"] == 20 and recorded["weight"] == 4
    assert recorded["train_samples"] == 16 and recorded["holdout_samples"] == 4
    assert 0 <= recorded["holdout_accuracy"] <= 1
    assert main(["train", *common, "--extra-data", str(tmp_path / "none.zip")]) == 1
    assert "no feedback there" in capsys.readouterr().err
