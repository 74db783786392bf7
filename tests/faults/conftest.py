"""Fixtures of the fault suite (the helpers are in faultkit.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from faultkit import TOKEN, MakeClient, Service
from testkit import write_idx

from registry import Registry
from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory, digits: Callable[..., Any]) -> Path:
    folder = tmp_path_factory.mktemp("tiny-mnist")
    write_idx(folder, "train", *digits(300, seed=0))
    write_idx(folder, "t10k", *digits(100, seed=1))
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models", "mnist")


@pytest.fixture
def make_client(tmp_path: Path, tiny_mnist: Path) -> MakeClient:
    """A factory: a TestClient (not yet started) whose folders are all in this test's tmp_path."""

    def make(**overrides: Any) -> TestClient:
        settings = Settings(
            **{
                "models_dir": tmp_path / "models",
                "state_dir": tmp_path / "state",
                "data_dir": tiny_mnist,
                "cache_dir": tmp_path / "cache",
                "token": TOKEN,
                "reload_interval_s": 0.05,
                # As the real services here (testkit.start_service): a job's publish phase is its noise
                # curve and plots, not the 10-15 s robustness suite, which does not look at a cancel
                # (a cancel there waited out the 10 s grace and killed the job).
                "robustness_sample": 0,
                **overrides,
            }
        )
        return TestClient(create_app(settings))

    return make


@pytest.fixture
def services(tmp_path: Path, tiny_mnist: Path) -> Iterator[Callable[..., Service]]:
    """A factory of real services on this test's folders; all of them are stopped at the end."""
    started: list[Service] = []

    def make(**env: str) -> Service:
        service = Service(tmp_path, tmp_path / "models", tiny_mnist, env)
        started.append(service)
        return service.start()

    yield make
    for service in started:
        service.stop()
