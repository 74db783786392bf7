"""Fixtures for the service tests: a small real model in a temp registry, apps, and digit images.

The model is trained once per session (a fraction of a second) on synthetic digits that went
through the same `digitize_array` the service applies to uploads, so an upload of one of the ten
synthetic prototypes, drawn large and dark on white, is read as its own class. No MNIST needed.

Test modules import the plain helpers with `from conftest import ...`: the test folders are not
packages, and pytest imports this file as `conftest` just before the test modules beside it.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from inprocess_runner import InProcessRunner
from PIL import Image
from threadpoolctl import threadpool_limits

from images import digitize_array
from mlp import MLP
from registry import Registry
from service.app import create_app
from service.settings import Settings
from trainer.optim import Adam

TOKEN = "secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIZES = [784, 32, 10]
CLASSES = [str(d) for d in range(10)]


# -- the model -----------------------------------------------------------------------------------


def prototypes() -> np.ndarray:
    """The ten synthetic digit patterns of tests/conftest.py, (10, 28, 28) floats in [0, 1]."""
    return _root_conftest()._PROTOTYPES.reshape(10, 28, 28)


@functools.cache
def _root_conftest() -> Any:
    """tests/conftest.py, loaded by path: `import conftest` would be ambiguous between the two."""
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("_mnist_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained_net() -> MLP:
    """784-32-10 trained on the ten synthetic digits as uploads become them (drawn large, then
    digitized), with their ink varied: ~100% on them, under a second of work."""
    rng = np.random.default_rng(0)
    uploads = np.stack([digitize_array(np.asarray(digit_pixels(k))) for k in range(10)]).reshape(10, 784)
    labels = np.arange(300) % 10
    ink = rng.uniform(0.6, 1.0, (300, 1))
    x = np.clip(
        uploads[labels] * ink + rng.uniform(0, 40, (300, 784)) * (rng.random((300, 784)) < 0.1), 0, 255
    )
    net = MLP(SIZES, rng=np.random.default_rng(0))
    optimizer = Adam(net.num_params)
    rng = np.random.default_rng(1)
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(150):
            batch = rng.integers(0, len(x), 64)
            net.loss_and_grads(x[batch].astype(np.float32) / 255, labels[batch].astype(np.int64))
            optimizer.step(net.flat_params, net.flat_grads, 3e-3)
    assert (net.predict(x) == labels).mean() > 0.9
    return net


def variant(net: MLP, seed: int, scale: float = 0.01) -> MLP:
    """A copy of `net` with slightly different weights: another version that still reads digits."""
    rng = np.random.default_rng(seed)
    copy = MLP(net.sizes, rng=rng)
    copy.load_params(
        {k: v + scale * rng.standard_normal(v.shape).astype(v.dtype) for k, v in net.params.items()}
    )
    return copy


def tiny_png(side: int = 8, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), value).save(buffer, "PNG")
    return buffer.getvalue()


def plot_writer(names: tuple[str, ...] = ("accuracy", "w1")) -> Callable[[Path, MLP], list[str]]:
    """A `write_plots` callback for `Registry.publish` that writes tiny PNGs instead of matplotlib's."""

    def write(folder: Path, _: MLP) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / f"{name}.png").write_bytes(tiny_png())
        return list(names)

    return write


Publish = Callable[..., str]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def registry(models_dir: Path) -> Registry:
    return Registry(models_dir, "mnist")


@pytest.fixture
def publish(registry: Registry, trained_net: MLP) -> Publish:
    """`publish(net=None, promote=True, accuracy=0.9, plots=False)` -> version name."""

    def publish_(
        net: MLP | None = None, *, promote: bool = True, accuracy: float = 0.9, plots: bool = False
    ) -> str:
        version = registry.publish(
            net or trained_net,
            {
                "test_accuracy": accuracy,
                "preset": "test",
                "dataset": {"name": "synthetic", "classes": CLASSES},
            },
            write_plots=plot_writer() if plots else None,
        )
        if promote:
            registry.promote(version)
        return version

    return publish_


def tamper_with(registry: Registry, version: str) -> None:
    """Flip one byte in the middle of a version's npz: its checksum no longer matches."""
    path = registry.weights_path(version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def tamper(registry: Registry) -> Callable[[str], None]:
    return lambda version: tamper_with(registry, version)


def write_pointer(registry: Registry, text: str) -> None:
    """Replace the pointer file by hand, as an operator might (whole, through a rename)."""
    tmp = registry.pointer_path.with_name(".current.by-hand")
    tmp.write_text(text)
    os.replace(tmp, registry.pointer_path)


def point_at(registry: Registry, version: str) -> None:
    """Move `current` without the registry's checks."""
    write_pointer(registry, json.dumps({"version": version, "history": []}))


# -- apps ----------------------------------------------------------------------------------------

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, models_dir: Path) -> MakeClient:
    """A factory: a TestClient (not yet started) on an app whose folders are in this test's tmp_path.

    `runner=` and `registry=` go to `create_app`; the rest are settings. Without a runner the app
    gets an `InProcessRunner` (records only: these tests train nothing, and starting and stopping the
    process runner's supervisor cost each app ~0.1 s), unless `real_runner=True` or the settings
    name a cluster's database (whose queue runner is what such a test is about).
    """

    def make(
        *, runner: Any = None, registry: Any = None, real_runner: bool = False, **overrides: Any
    ) -> TestClient:
        settings = Settings(
            **{
                "models_dir": models_dir,
                "state_dir": tmp_path / "state",
                "cache_dir": tmp_path / "cache",
                "token": TOKEN,
                **overrides,
            }
        )
        if runner is None and not real_runner and not settings.database_url:
            runner = InProcessRunner(settings)
        return TestClient(create_app(settings, runner=runner, registry=registry))

    return make


@pytest.fixture
def api(make_client: MakeClient, publish: Publish) -> Iterator[TestClient]:
    """A running app serving v0001 (the trained model), token "secret"."""
    assert publish() == "v0001"
    with make_client() as client:
        yield client


def poll(check: Callable[[], Any], deadline_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Call `check()` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"gave up after {deadline_s} s"
        time.sleep(interval_s)


# -- images --------------------------------------------------------------------------------------


def digit_pixels(k: int, side: int = 280) -> Image.Image:
    """Prototype `k` drawn large, dark ink on white, as a person would upload it (mode L)."""
    ink = (prototypes()[k] * 255).astype(np.uint8)
    return Image.fromarray(255 - ink).resize((side, side), Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


DigitImage = Callable[..., bytes]


@pytest.fixture(scope="session")
def digit_image() -> DigitImage:
    """`digit_image(k, fmt="PNG", side=280)` -> the bytes of a clearly drawn digit `k`."""

    def make(k: int, fmt: str = "PNG", side: int = 280, **options: Any) -> bytes:
        return encode(digit_pixels(k, side), fmt, **options)

    return make
