"""Downloading from mirrors (trainer/download.py): a real HTTP server on 127.0.0.1, nothing else."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest
from idxfiles import (
    Server,
    leftovers,
    serving,
    sums_of,
    tiny_gz,
    write_tiny,
)

from trainer import dataset_specs
from trainer.datasets import DatasetError
from trainer.download import download


@pytest.fixture
def server() -> Iterator[Server]:
    with serving() as srv:
        yield srv


def test_download_falls_back_to_second_mirror(tmp_path: Path, server: Server) -> None:
    files = tiny_gz()
    missing = f"{server.base}/missing/"  # 404 for everything
    good = server.serve("/good", files)
    dest = download(
        "mnist", tmp_path / "dl", mirrors=[missing, good], checksums=sums_of(files), progress=False, backoff=0
    )
    assert dest == tmp_path / "dl"
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
        assert (dest / name).stat().st_mode & 0o777 == 0o644
    assert sum(r.startswith("/missing/") for r in server.requests) == 4  # a 404 is not retried
    assert leftovers(dest) == []


def test_bad_bytes_are_not_kept_and_next_mirror_wins(tmp_path: Path, server: Server) -> None:
    files = tiny_gz()
    bad = server.serve("/bad", {name: b"junk" + data for name, data in files.items()})
    good = server.serve("/good", files)
    dest = download(
        "mnist", tmp_path / "dl", mirrors=[bad, good], checksums=sums_of(files), progress=False, backoff=0
    )
    assert all((dest / name).read_bytes() == data for name, data in files.items())
    assert sum(r.startswith("/bad/") for r in server.requests) == 4  # a checksum miss is not retried


def test_all_mirrors_bad(tmp_path: Path, server: Server) -> None:
    files = tiny_gz()
    bad = server.serve("/bad", {name: data[:-3] + b"xyz" for name, data in files.items()})
    with pytest.raises(DatasetError) as info:
        download(
            "mnist",
            tmp_path / "dl",
            mirrors=[bad, f"{server.base}/missing/"],
            checksums=sums_of(files),
            progress=False,
            backoff=0,
        )
    message = str(info.value)
    assert "sha256 mismatch" in message and "HTTP 404" in message and "MNIST_DATA_DIR" in message
    assert list((tmp_path / "dl").iterdir()) == []  # nothing under a final name, no temp files


def test_a_container_says_what_to_do_on_the_host_when_nothing_downloads(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-compose.yml sets MNIST_OFFLINE_ADVICE: paths inside the container mean nothing outside."""
    monkeypatch.setenv("MNIST_OFFLINE_ADVICE", "MNIST_HOST_DATA=/your/folder docker compose run ...")
    files = tiny_gz()
    with pytest.raises(DatasetError) as info:
        download("mnist", tmp_path / "dl", mirrors=[f"{server.base}/missing/"], checksums=sums_of(files),
                 progress=False, backoff=0)  # fmt: skip
    message = str(info.value)
    assert message.endswith("MNIST_HOST_DATA=/your/folder docker compose run ...")
    assert "by hand" not in message


def test_transient_errors_are_retried(tmp_path: Path, server: Server) -> None:
    files = tiny_gz()
    answers = iter([(503, b"busy"), (500, b"oops")])
    server.serve("/flaky", files)
    name = dataset_specs.TRAIN_LABELS
    server.routes[f"/flaky/{name}"] = lambda: next(answers, (200, files[name]))
    dest = download(
        "mnist",
        tmp_path / "dl",
        mirrors=[f"{server.base}/flaky/"],
        checksums=sums_of(files),
        retries=3,
        progress=False,
        backoff=0,
    )
    assert (dest / name).read_bytes() == files[name]
    assert server.requests.count(f"/flaky/{name}") == 3


def test_unreachable_mirror_then_good(tmp_path: Path, server: Server) -> None:
    files = tiny_gz()
    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    dead = f"http://127.0.0.1:{closed.server_address[1]}/"
    closed.server_close()  # nothing listens there any more: connection refused
    dest = download(
        "mnist",
        tmp_path / "dl",
        mirrors=[dead, server.serve("/good", files)],
        checksums=sums_of(files),
        retries=2,
        progress=False,
        backoff=0,
        timeout=5,
    )
    assert all((dest / name).read_bytes() == data for name, data in files.items())


def test_good_files_are_not_downloaded_again(tmp_path: Path, server: Server) -> None:
    files = tiny_gz()
    sums = write_tiny(tmp_path / "dl")
    (tmp_path / "dl" / dataset_specs.TEST_IMAGES).write_bytes(b"stale")
    download(
        "mnist",
        tmp_path / "dl",
        mirrors=[server.serve("/good", files)],
        checksums=sums,
        progress=False,
        backoff=0,
    )
    assert server.requests == [f"/good/{dataset_specs.TEST_IMAGES}"]
    assert (tmp_path / "dl" / dataset_specs.TEST_IMAGES).read_bytes() == files[dataset_specs.TEST_IMAGES]
