"""Seeding an object-storage registry (docker-compose.s3.yml's one-shot), against moto's S3 server.

A missing bucket is created; an empty prefix receives the shipped baseline and then serves it like
any published version (sha256 checked on load, the pointer naming the shipped current); a prefix
that holds a version is never touched; a store that does not answer fails with a clear message.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest

from mlp import MLP
from registry import Registry
from registry.object_seed import ensure_bucket, main, seed
from registry.objects import ObjectRegistry, make_client
from registry.shipped import SHIPPED_ROOT
from tests.realservers import new_bucket, s3_client, s3_environment


@pytest.fixture
def aws_env(s3_endpoint, monkeypatch) -> None:
    for name, value in s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)


def object_keys(registry: ObjectRegistry) -> list[str]:
    listing = registry.client.list_objects_v2(Bucket=registry.bucket, Prefix=registry.base)
    return sorted(obj["Key"][len(registry.base) :] for obj in listing.get("Contents", []))


def test_an_empty_prefix_receives_the_shipped_baseline_and_serves_it(s3_endpoint):
    registry = ObjectRegistry(f"s3://{new_bucket(s3_endpoint)}/prod", client=s3_client(s3_endpoint))
    shipped = Registry(SHIPPED_ROOT, "mnist")

    assert seed(registry) == shipped.versions()

    assert registry.pointer().version == shipped.pointer().version
    current = registry.pointer().version
    assert registry.manifest(current)["sha256"] == shipped.manifest(current)["sha256"]
    net, _ = registry.load(current)  # the registry's own loader checks the sha256
    assert net.sizes == shipped.load(current)[0].sizes
    assert registry.read_plot(current, "w1") == (SHIPPED_ROOT / "mnist" / current / "w1.png").read_bytes()


def test_a_prefix_with_a_version_is_left_as_it_is(s3_endpoint, tmp_path):
    registry = ObjectRegistry(f"s3://{new_bucket(s3_endpoint)}/prod", client=s3_client(s3_endpoint))
    mine = registry.publish(MLP([784, 8, 10], rng=np.random.default_rng(0)), {"test_accuracy": 0.5})
    before = object_keys(registry)

    assert seed(registry) == []

    assert object_keys(registry) == before
    assert registry.versions() == [mine]


def test_seeding_skips_hidden_files_and_writes_the_pointer_after_the_manifests(s3_endpoint, tmp_path):
    source = tmp_path / "shipped"
    Registry(source, "mnist").publish(MLP([784, 8, 10], rng=np.random.default_rng(1)), {"test_accuracy": 0.5})
    Registry(source, "mnist").promote("v0001")
    (source / "mnist" / ".v0002.npz.tmp").write_bytes(b"a publisher's half-written file")
    registry = ObjectRegistry(f"s3://{new_bucket(s3_endpoint)}/x", client=s3_client(s3_endpoint))

    assert seed(registry, shipped=source) == ["v0001"]

    assert not [k for k in object_keys(registry) if Path(k).name.startswith(".")]
    assert registry.pointer().version == "v0001"


def test_main_creates_the_bucket_and_a_second_run_changes_nothing(aws_env, s3_endpoint, capsys):
    bucket = f"fresh-{secrets.token_hex(4)}"
    url = f"s3://{bucket}/cluster"

    assert main([url, "--wait", "5"]) == 0
    registry = ObjectRegistry(url, client=s3_client(s3_endpoint))
    seeded = registry.versions()
    assert seeded == Registry(SHIPPED_ROOT, "mnist").versions()
    etags = {
        k: registry.client.head_object(Bucket=bucket, Key=registry.base + k)["ETag"]
        for k in object_keys(registry)
    }

    assert main([url, "--wait", "5"]) == 0
    assert {
        k: registry.client.head_object(Bucket=bucket, Key=registry.base + k)["ETag"]
        for k in object_keys(registry)
    } == etags
    assert ensure_bucket(make_client(), bucket, wait_s=1) is False


def test_main_fails_clearly_when_the_store_does_not_answer(aws_env, monkeypatch, capsys):
    from tests.testkit import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")

    assert main(["s3://nowhere/prefix", "--wait", "0"]) == 1

    err = capsys.readouterr().err
    assert "registry.object_seed: object storage did not answer" in err


def test_a_url_that_is_not_s3_is_refused(aws_env, capsys):
    assert main(["/app/models", "--wait", "0"]) == 1
    assert "not an object storage URL" in capsys.readouterr().err


def test_the_pointer_file_seeded_is_the_shipped_one(s3_endpoint):
    registry = ObjectRegistry(f"s3://{new_bucket(s3_endpoint)}/p", client=s3_client(s3_endpoint))
    seed(registry)
    stored = registry.client.get_object(Bucket=registry.bucket, Key=registry.base + "current")["Body"].read()
    assert json.loads(stored) == json.loads((SHIPPED_ROOT / "mnist" / "current").read_bytes())
