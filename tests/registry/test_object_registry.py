"""The registry on object storage, against a real S3 API server (moto's server mode on 127.0.0.1).

The same promises as the local folder: versions written once and never overwritten (conditional
puts), unique numbers when publishers race, the manifest's sha256 checked on load, a pointer that
two promoters cannot tear.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

from mlp import MLP
from registry import (
    AlreadyCurrent,
    CorruptPointer,
    CorruptVersion,
    NothingToRollBack,
    Registry,
    RegistryError,
    VersionNotFound,
    open_registry,
)
from registry.objects import ObjectRegistry, StorageUnavailable
from tests.realservers import new_bucket, s3_client, s3_environment

SIZES = [784, 8, 10]


def small_net(seed: int) -> MLP:
    return MLP(SIZES, rng=np.random.default_rng(seed))


def write_plots(folder: Path, net: MLP) -> list[str]:
    (folder / "w1.png").write_bytes(b"\x89PNG fake " + net.params["w1"][:2, :2].tobytes())
    (folder / "curves.csv").write_bytes(b"epoch,loss\n1,0.5\n")
    return ["w1"]


@pytest.fixture
def bucket(s3_endpoint) -> str:
    return new_bucket(s3_endpoint)


@pytest.fixture
def registry(s3_endpoint, bucket) -> ObjectRegistry:
    return ObjectRegistry(f"s3://{bucket}/team/models", client=s3_client(s3_endpoint))


def keys(registry: ObjectRegistry) -> list[str]:
    listing = registry.client.list_objects_v2(Bucket=registry.bucket, Prefix=registry.base)
    return sorted(obj["Key"][len(registry.base) :] for obj in listing.get("Contents", []))


def publish(registry: ObjectRegistry, seed: int, **manifest) -> str:
    return registry.publish(small_net(seed), {"test_accuracy": 0.5 + seed / 100, **manifest}, write_plots)


def test_open_registry_picks_the_storage_by_the_location(tmp_path, s3_endpoint, bucket):
    assert isinstance(open_registry(tmp_path / "models"), Registry)
    remote = open_registry(f"s3://{bucket}/p", "fashion", endpoint_url=s3_endpoint)
    assert isinstance(remote, ObjectRegistry)
    assert remote.where == f"s3://{bucket}/p/fashion"
    with pytest.raises(RegistryError, match="not an object storage URL"):
        ObjectRegistry("s3:///no-bucket")


def test_publish_writes_weights_plots_and_manifest_under_the_prefix(registry):
    version = publish(registry, 1, preset="fast")
    assert version == "v0001"
    assert keys(registry) == ["v0001.json", "v0001.npz", "v0001/curves.csv", "v0001/w1.png"]
    manifest = registry.manifest("v0001")
    assert manifest["version"] == "v0001" and manifest["preset"] == "fast" and manifest["plots"] == ["w1"]
    assert manifest["sha256"] == hashlib.sha256(registry.read_weights("v0001")).hexdigest()
    net, loaded_manifest = registry.load("v0001")
    np.testing.assert_array_equal(net.params["w1"], small_net(1).params["w1"])
    assert loaded_manifest == manifest
    assert registry.read_plot("v0001", "w1").startswith(b"\x89PNG")
    assert registry.read_plot("v0001", "loss") is None
    assert registry.versions() == ["v0001"]
    assert publish(registry, 2) == "v0002"
    assert registry.manifest("v0002")["parent"] is None  # nothing promoted yet


def test_a_changed_weight_file_is_refused_on_load(registry):
    version = publish(registry, 1)
    other = publish(registry, 2)
    registry.client.put_object(
        Bucket=registry.bucket, Key=registry.base + f"{version}.npz", Body=registry.read_weights(other)
    )
    with pytest.raises(CorruptVersion, match="sha256"):
        registry.load(version)
    with pytest.raises(CorruptVersion):
        registry.promote(version)  # never point at a version that would not load
    assert registry.current() is None


def test_promote_rollback_and_the_pointer_stamp(registry):
    with pytest.raises(VersionNotFound, match="no current version"):
        registry.resolve("current")
    assert registry.pointer_stamp() is None
    v1, v2 = publish(registry, 1), publish(registry, 2)
    assert registry.promote(v1) == (None, v1)
    stamp = registry.pointer_stamp()
    assert stamp is not None
    assert registry.promote(v2) == (v1, v2)
    assert registry.pointer_stamp() != stamp
    with pytest.raises(AlreadyCurrent):  # nothing to move: said, not reported as a move from itself
        registry.promote(v2)
    assert registry.publish(small_net(3), {}) == "v0003"
    assert registry.manifest("v0003")["parent"] == v2
    assert registry.rollback() == (v2, v1)
    assert registry.current() == v1
    with pytest.raises(NothingToRollBack):
        registry.rollback()
    catalog = registry.catalog()
    assert catalog.current == v1 and [v.version for v in catalog.versions] == ["v0003", "v0002", "v0001"]


def test_a_corrupt_pointer_is_reported_and_promote_repairs_it(registry):
    version = publish(registry, 1)
    registry.client.put_object(Bucket=registry.bucket, Key=registry.base + "current", Body=b'"v0001"')
    with pytest.raises(CorruptPointer, match="corrupt"):
        registry.current()
    assert registry.catalog().pointer_error is not None
    registry.promote(version)
    assert registry.current() == version


def test_a_version_number_already_claimed_is_never_overwritten(registry):
    """A dead publisher's weights under v0001 (no manifest): the next publish takes v0002 and
    leaves the claimed object alone; the sweep removes it only once it is old."""
    registry.client.put_object(Bucket=registry.bucket, Key=registry.base + "v0001.npz", Body=b"claimed")
    assert publish(registry, 1) == "v0002"
    assert registry.client.get_object(Bucket=registry.bucket, Key=registry.base + "v0001.npz")[
        "Body"
    ].read() == (b"claimed")
    assert registry.versions() == ["v0002"]
    assert registry.sweep() == []  # young: its publisher may still be at work


def test_sweep_removes_old_orphans_only(registry, monkeypatch):
    publish(registry, 1)
    registry.client.put_object(Bucket=registry.bucket, Key=registry.base + "v0002.npz", Body=b"orphan")
    registry.client.put_object(Bucket=registry.bucket, Key=registry.base + "v0002/w1.png", Body=b"orphan")
    monkeypatch.setattr("registry.objects.ORPHAN_GRACE_S", -5.0)
    assert sorted(registry.sweep()) == ["v0002.npz", "v0002/w1.png"]
    assert keys(registry) == ["v0001.json", "v0001.npz", "v0001/curves.csv", "v0001/w1.png"]


def test_the_storage_refuses_a_second_write_of_the_same_version(registry):
    """What the claim relies on: the store itself honours If-None-Match: * (moto 5 does)."""
    publish(registry, 1)
    assert registry._put("v0001.npz", b"other", "application/octet-stream", if_none_match=True) is False
    assert registry._put("v0001.json", b"{}", "application/json", if_none_match=True) is False
    registry.load("v0001")


def test_before_commit_can_stop_a_publish_without_a_trace(registry):
    def refuse() -> None:
        raise RuntimeError("the job was cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        registry.publish(small_net(1), {}, write_plots, before_commit=refuse)
    assert keys(registry) == []


def test_a_failed_upload_leaves_no_version_behind(registry, monkeypatch):
    real_put = registry._put

    def put(name, data, content_type, **kwargs):
        if name.endswith(".json"):
            raise StorageUnavailable("the store went away")
        return real_put(name, data, content_type, **kwargs)

    monkeypatch.setattr(registry, "_put", put)
    with pytest.raises(StorageUnavailable):
        publish(registry, 1)
    assert keys(registry) == [] and registry.versions() == []


def test_concurrent_annotations_keep_every_key(registry):
    version = publish(registry, 1)
    errors: list[BaseException] = []

    def annotate(key: str) -> None:
        try:
            registry.annotate(version, key, {"value": key})
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(f"measure_{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    manifest = registry.manifest(version)
    assert all(manifest[f"measure_{i}"] == {"value": f"measure_{i}"} for i in range(6))
    with pytest.raises(RegistryError, match="cannot be annotated"):
        registry.annotate(version, "sha256", "x")
    registry.load(version)  # the weights and their checksum untouched


def test_annotate_lists_a_plot_written_after_publishing(registry):
    version = publish(registry, 1)
    with pytest.raises(RegistryError, match="no plot file"):
        registry.annotate(version, "robustness", {}, plot="robustness")
    registry.write_plot(version, "robustness", b"\x89PNG robust")
    manifest = registry.annotate(version, "robustness", {"ok": True}, plot="robustness")
    assert manifest["plots"] == ["w1", "robustness"]
    assert registry.read_plot(version, "robustness") == b"\x89PNG robust"


def _publish_in_process(url: str, endpoint: str, seed: int, out) -> None:
    registry = open_registry(url, endpoint_url=endpoint)
    out.put(registry.publish(small_net(seed), {"seed": seed}, write_plots))


def test_publishers_racing_in_separate_processes_get_distinct_versions(s3_endpoint, bucket, monkeypatch):
    for name, value in s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    url = f"s3://{bucket}/race"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_publish_in_process, args=(url, s3_endpoint, seed, out)) for seed in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 5
    published = sorted(out.get(timeout=5) for _ in procs)
    assert published == ["v0001", "v0002", "v0003", "v0004", "v0005"]
    registry = open_registry(url, endpoint_url=s3_endpoint)
    assert registry.versions() == published
    seeds = {registry.manifest(v)["seed"] for v in published}
    assert seeds == set(range(5))
    for version in published:  # each version's files are its own publisher's, whole
        net, manifest = registry.load(version)
        np.testing.assert_array_equal(net.params["w1"], small_net(manifest["seed"]).params["w1"])


def test_promoters_racing_never_lose_a_move(registry):
    versions = [publish(registry, seed) for seed in range(4)]
    barrier = threading.Barrier(4)

    def promote(version: str) -> None:
        barrier.wait()
        registry.promote(version)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pointer = registry.pointer()
    # every promote landed: the three that were overtaken are in the history, in some order
    assert sorted([*pointer.history, pointer.version]) == versions


def test_an_unreachable_store_is_a_registry_error_naming_it(tmp_path):
    from tests.testkit import free_port

    registry = open_registry("s3://nowhere/models", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageUnavailable, match="s3://nowhere/models/mnist"):
        registry.versions()


def test_a_missing_bucket_is_a_clear_error(s3_endpoint):
    registry = open_registry("s3://no-such-bucket/models", endpoint_url=s3_endpoint)
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        registry.versions()


def test_manifest_of_an_unknown_version(registry):
    with pytest.raises(VersionNotFound):
        registry.manifest("v0009")
    registry.client.put_object(Bucket=registry.bucket, Key=registry.base + "v0001.json", Body=b"[1]")
    registry.client.put_object(Bucket=registry.bucket, Key=registry.base + "v0001.npz", Body=b"x")
    with pytest.raises(CorruptVersion, match="not a JSON object"):
        registry.manifest("v0001")
    assert registry.catalog().versions[0].damaged is not None


def test_promote_validates_with_the_callers_loader(registry):
    """A serving process passes its own loader (load + warm-up once); a refusal leaves the pointer."""
    version = publish(registry, 1)
    checked: list[str] = []

    def loader(name: str):
        checked.append(name)
        return registry.load(name)

    def refuse(name: str) -> None:
        raise CorruptVersion(f"{name}: its warm-up prediction is not finite")

    with pytest.raises(CorruptVersion, match="warm-up"):
        registry.promote(version, load=refuse)
    assert registry.current() is None
    assert registry.promote(version, load=loader) == (None, version)
    assert checked == [version]
