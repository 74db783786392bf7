"""Fixtures shared by the test packages."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest


def _prototypes() -> np.ndarray:
    """Ten fixed 28x28 patterns in [0, 1]: a Gaussian blob at a class-specific place plus a stroke."""
    yy, xx = np.mgrid[0:28, 0:28]
    protos = np.zeros((10, 28, 28))
    for k in range(10):
        cy, cx = 6 + 5 * (k // 4), 5 + 6 * (k % 4)
        protos[k] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))
        if k % 2:
            protos[k, 4 + k : 6 + k, 3:25] = 1.0  # horizontal stroke
        else:
            protos[k, 3:25, 4 + k : 6 + k] = 1.0  # vertical stroke
    return protos.reshape(10, 784)


_PROTOTYPES = _prototypes()


def make_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic uint8 images (n, 784) of 10 learnable classes, and their uint8 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    ink = rng.uniform(150, 255, (n, 1))
    background = rng.uniform(0, 60, (n, 784)) * (rng.random((n, 784)) < 0.3)
    pixels = _PROTOTYPES[labels] * ink + background
    return np.clip(pixels, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def digits() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """A factory: `digits(n, seed)` -> (uint8 images (n, 784), uint8 labels (n,))."""
    return make_digits


@pytest.fixture(scope="module")
def one_blas_thread():
    """BLAS on one thread for a test module: on a busy machine, spinning BLAS threads make the small
    products of these tests ten times slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server (moto's server mode) on 127.0.0.1 for the session; tests make their buckets."""
    from tests.realservers import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL admin URL: the machine's server on 127.0.0.1:5432, else a throwaway one made from
    the installed binaries (tests/realservers.py); fails saying what to install when neither exists."""
    from tests.realservers import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture
def database_url(postgres_admin_url) -> Iterator[str]:
    """A fresh database `mnist_test_<random>` for one test, dropped after it."""
    from tests.realservers import fresh_database

    with fresh_database(postgres_admin_url) as url:
        yield url
