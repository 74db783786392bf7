"""Real servers for the cluster tests, on 127.0.0.1: an S3 API (moto's server mode) and PostgreSQL.

Never mocks: boto3 talks HTTP to `moto_server`, psycopg talks to a real PostgreSQL. The machine's
PostgreSQL (127.0.0.1:5432, trust auth) is used when it answers; otherwise a throwaway server is
made from the installed binaries (initdb + pg_ctl into a temp folder) and stopped afterwards. With
neither, the tests that need it fail saying what to install.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.testkit import free_port

PG_BINARIES = [Path(p) for p in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")]
MACHINE_PG = "postgresql://{user}@127.0.0.1:5432/{db}"


def wait_for_port(port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until something accepts connections on 127.0.0.1:port (or the process died)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {deadline_s} s")


@contextmanager
def moto_server() -> Iterator[str]:
    """An S3 API server on a free port; yields its endpoint URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise RuntimeError("moto_server is missing: pip install -r requirements-dev.txt (moto[server])")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def new_bucket(endpoint: str) -> str:
    name = f"models-{secrets.token_hex(4)}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def s3_environment(endpoint: str) -> dict[str, str]:
    """What a child process needs to reach the moto server as boto3's default."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


# -- PostgreSQL ------------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL admin database: the machine's, or a throwaway one from the binaries."""
    skip = os.environ.get("MNIST_TEST_THROWAWAY_PG")  # =1 skips the machine's server (tests the fallback)
    users = () if skip else ("root", "postgres", os.environ.get("USER", "root"))
    for user in users:
        url = MACHINE_PG.format(user=user, db="postgres")
        if _answers(url):
            yield url
            return
    binaries = next((b for b in PG_BINARIES if (b / "initdb").exists()), None)
    if binaries is None:
        raise RuntimeError(
            "no PostgreSQL answers on 127.0.0.1:5432 and none is installed to start one: "
            "apt-get install postgresql (or point the tests at a server)"
        )
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    port = free_port()
    user = "postgres"
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as an unprivileged account
        account = _unprivileged_account()
        shutil.chown(folder, account, account)
        run_as = ["runuser", "-u", account, "--"]
    subprocess.run(
        [*run_as, str(binaries / "initdb"), "-D", str(folder / "data"), "-U", user, "-A", "trust"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            *run_as,
            str(binaries / "pg_ctl"),
            "-D",
            str(folder / "data"),
            "-l",
            str(folder / "log"),
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _unprivileged_account() -> str:
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) to run initdb as")


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database `mnist_test_<random>`, dropped afterwards (its connections too)."""
    import psycopg

    name = f"mnist_test_{secrets.token_hex(5)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
