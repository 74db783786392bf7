"""Settings from the environment: an empty variable is an unset one, for every setting.

A Makefile's empty `$(wildcard ...)`, a compose file's `${VAR:-}` or `export VAR=` must not turn a
folder into the current directory (training then failed with a message about the checkout).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"MNIST_{name.upper()}", raising=False)


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.setenv(f"MNIST_{name.upper()}", "")
    assert Settings() == Settings.model_construct()  # every field at its documented default
    settings = Settings()
    assert settings.data_dir is None  # unset: training jobs download
    assert settings.token is None  # unset: generated into the state folder
    assert settings.models_dir == Settings.model_fields["models_dir"].default
    assert settings.port == 8000


def test_a_set_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MNIST_PORT", "8123")
    settings = Settings()
    assert (settings.data_dir, settings.port) == (tmp_path, 8123)
