"""The registry on disk: immutable numbered versions, one pointer, and nothing left half-written."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from mlp import MLP, read_meta
from registry import (
    AlreadyCurrent,
    BadVersionName,
    CorruptVersion,
    NothingToRollBack,
    Registry,
    RegistryError,
    VersionNotFound,
    format_utc,
    parse_utc,
    parse_version,
    sha256_of,
)

SIZES = [784, 8, 10]


def small_net(seed: int) -> MLP:
    return MLP(SIZES, rng=np.random.default_rng(seed))


def write_plots(folder: Path, net: MLP) -> list[str]:
    """A stand-in for the real plots: one small file per picture."""
    (folder / "accuracy.png").write_bytes(b"\x89PNG fake")
    (folder / "w1.png").write_bytes(b"\x89PNG fake " + net.params["w1"][:2, :2].tobytes())
    return ["accuracy", "w1"]


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "models")


def publish(registry: Registry, seed: int, **manifest) -> str:
    return registry.publish(small_net(seed), {"test_accuracy": 0.5 + seed / 100, **manifest}, write_plots)


def listing(folder: Path) -> list[str]:
    """Every entry under `folder`, hidden ones included, as relative paths; not the lock file."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".lock")


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v0003", "v0001", "v9999", "v10000", "v12345"])
def test_a_version_name_is_v_and_four_digits_or_more(name):
    assert parse_version(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "0", "3", "0003", "v3", "v003", "v001", "V0003", " v0003 ", "v01234", "vv3", "abc", "-1",
     "v1234567", "3.0", "../v0001", "current", 3],
)  # fmt: skip
def test_every_other_spelling_is_refused_by_the_one_rule(name):
    with pytest.raises(BadVersionName, match="is not a version name: versions are named v0001, v0002"):
        parse_version(name)


@pytest.mark.parametrize("model", ["", "Mnist", "../etc", "a b", "x" * 65])
def test_bad_model_names_are_refused(tmp_path, model):
    with pytest.raises(RegistryError, match="bad model name"):
        Registry(tmp_path, model)


# -- publishing ---------------------------------------------------------------------------------


def test_publish_writes_weights_manifest_and_plots_with_a_matching_checksum(registry):
    net = small_net(0)
    version = registry.publish(net, {"test_accuracy": 0.91, "preset": "fast"}, write_plots)
    assert version == "v0001"
    folder = registry.folder
    assert listing(folder) == ["v0001", "v0001.json", "v0001.npz", "v0001/accuracy.png", "v0001/w1.png"]
    manifest = json.loads((folder / "v0001.json").read_text())
    assert manifest["sha256"] == sha256_of(folder / "v0001.npz")
    assert manifest["version"] == "v0001" and manifest["model"] == "mnist"
    assert manifest["sizes"] == SIZES and manifest["dtype"] == "float32"
    assert manifest["num_params"] == net.num_params
    assert manifest["plots"] == ["accuracy", "w1"]
    assert manifest["test_accuracy"] == 0.91 and manifest["preset"] == "fast"
    assert manifest["parent"] is None
    assert format_utc(parse_utc(manifest["created_at"])) == manifest["created_at"]  # the one stored form
    # the npz describes itself: the same record (without the plot list and its own checksum)
    embedded = read_meta(folder / "v0001.npz")["metadata"]
    assert embedded["version"] == "v0001" and embedded["test_accuracy"] == 0.91
    assert registry.manifest("v0001") == manifest
    assert registry.plot_path("v0001", "w1") == folder / "v0001" / "w1.png"
    loaded, loaded_manifest = registry.load("v0001")
    np.testing.assert_array_equal(loaded.flat_params, net.flat_params)
    assert loaded_manifest == manifest


def test_versions_are_numbered_in_order_and_record_their_parent(registry):
    assert registry.versions() == [] and registry.current() is None
    assert [publish(registry, s) for s in range(3)] == ["v0001", "v0002", "v0003"]
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    assert registry.manifest("v0002")["parent"] is None  # nothing was current
    registry.promote("v0002")
    assert registry.manifest(publish(registry, 9))["parent"] == "v0002"


def test_an_unfinished_version_is_not_a_version_and_its_number_is_not_lost(registry):
    publish(registry, 0)
    (registry.folder / "v0002").mkdir()  # a publisher killed between its renames (or an old claim)
    (registry.folder / "v0002" / "w1.png").write_bytes(b"a whole picture")
    (registry.folder / "v0002.npz").write_bytes(b"whole weights")
    assert registry.versions() == ["v0001"]
    assert publish(registry, 1) == "v0002"  # the remains were swept under the lock
    assert registry.versions() == ["v0001", "v0002"]
    assert listing(registry.folder) == [
        "v0001", "v0001.json", "v0001.npz", "v0001/accuracy.png", "v0001/w1.png",
        "v0002", "v0002.json", "v0002.npz", "v0002/accuracy.png", "v0002/w1.png",
    ]  # fmt: skip


def test_a_version_missing_its_manifest_below_the_newest_is_left_alone(registry):
    """An operator who removed a manifest by hand: not the remains of a commit, so not swept."""
    publish(registry, 0)
    publish(registry, 1)
    (registry.folder / "v0001.json").unlink()
    assert publish(registry, 2) == "v0003"
    assert (registry.folder / "v0001.npz").is_file()


def _publish_many(root: str, count: int, barrier, results) -> None:
    """Runs in a child process: publish `count` versions, each round starting with the others."""
    registry = Registry(Path(root))
    versions = []
    for i in range(count):
        barrier.wait(timeout=60)  # all publishers claim a number at the same moment
        versions.append(registry.publish(small_net(os.getpid() * 100 + i), {"pid": os.getpid()}, write_plots))
    results.put(versions)


def test_concurrent_publishers_get_unique_versions_that_all_load(tmp_path):
    processes, per_process = 3, 5
    context = multiprocessing.get_context("fork")  # spawn would cost seconds of imports
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_publish_many, args=(str(tmp_path), per_process, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        published = [results.get(timeout=120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * processes
    everything = [v for versions in published for v in versions]
    total = processes * per_process
    assert sorted(everything) == [f"v{i:04d}" for i in range(1, total + 1)]  # unique, no gaps
    registry = Registry(tmp_path)
    assert registry.versions() == sorted(everything)
    pids = set()
    for version in everything:
        net, manifest = registry.load(version)
        assert manifest["version"] == version and net.sizes == tuple(SIZES)
        pids.add(manifest["pid"])
    assert len(pids) == processes
    assert not [p for p in listing(registry.folder) if p.endswith(".tmp")]


# -- the pointer ---------------------------------------------------------------------------------


def test_promote_and_rollback_move_the_pointer(registry):
    v1, v2, v3 = (publish(registry, s) for s in range(3))
    assert registry.promote(v1) == (None, v1)
    assert registry.promote(v2) == (v1, v2)
    assert registry.promote(v3) == (v2, v3)
    assert registry.current() == v3
    assert registry.pointer().history == (v1, v2)
    assert registry.rollback() == (v3, v2)
    assert registry.rollback() == (v2, v1)
    assert registry.current() == v1
    with pytest.raises(NothingToRollBack):
        registry.rollback()
    assert registry.current() == v1
    net, _ = registry.load()  # the current version
    np.testing.assert_array_equal(net.flat_params, small_net(0).flat_params)


def test_promoting_the_current_version_again_adds_no_history(registry):
    v1 = publish(registry, 0)
    registry.promote(v1)
    with pytest.raises(AlreadyCurrent, match="v0001 is already the current version"):
        registry.promote(v1)  # never "previous: v0001"
    with pytest.raises(NothingToRollBack):
        registry.rollback()


def test_rollback_with_nothing_promoted(registry):
    with pytest.raises(NothingToRollBack, match="no earlier version"):
        registry.rollback()
    publish(registry, 0)
    with pytest.raises(NothingToRollBack):
        registry.rollback()


def test_rollback_skips_versions_that_are_gone(registry):
    v1, v2, v3 = (publish(registry, s) for s in range(3))
    for v in (v1, v2, v3):
        registry.promote(v)
    (registry.folder / f"{v2}.json").unlink()
    assert registry.rollback() == (v3, v1)


def test_unknown_versions(registry):
    with pytest.raises(VersionNotFound, match="no current version"):
        registry.load()
    publish(registry, 0)
    for call in (registry.load, registry.promote, registry.manifest, registry.resolve):
        with pytest.raises(VersionNotFound, match="v0007"):
            call("v0007")
    with pytest.raises(VersionNotFound):
        registry.plot_path("v0001", "../../etc/passwd")


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_tampered_npz_is_refused_on_load(registry):
    version = publish(registry, 0)
    flip_a_byte(registry.weights_path(version))
    with pytest.raises(CorruptVersion, match="sha256"):
        registry.load(version)


def test_a_bad_file_with_a_matching_checksum_is_still_refused(registry):
    version = publish(registry, 0)
    path = registry.weights_path(version)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["w2"][0, 0] = np.nan
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    manifest = registry.manifest(version)
    manifest["sha256"] = sha256_of(path)  # as if the publisher itself wrote a broken file
    (registry.folder / f"{version}.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptVersion, match="NaN"):
        registry.load(version)


def test_promoting_a_corrupt_version_is_refused_and_the_pointer_stays(registry):
    v1, v2 = publish(registry, 0), publish(registry, 1)
    registry.promote(v1)
    pointer_before = registry.pointer_path.read_bytes()
    flip_a_byte(registry.weights_path(v2))
    with pytest.raises(CorruptVersion):
        registry.promote(v2)
    assert registry.pointer_path.read_bytes() == pointer_before
    assert registry.current() == v1


def test_a_manifest_that_is_not_json_is_corrupt(registry):
    version = publish(registry, 0)
    (registry.folder / f"{version}.json").write_text("{half")
    with pytest.raises(CorruptVersion, match="not valid JSON"):
        registry.manifest(version)


# -- interrupted publishing ----------------------------------------------------------------------


def interrupting_plots(folder: Path, net: MLP) -> list[str]:
    (folder / "accuracy.png").write_bytes(b"half a picture")
    raise KeyboardInterrupt


def test_a_publish_interrupted_in_write_plots_leaves_nothing_and_the_next_one_works(registry):
    with pytest.raises(KeyboardInterrupt):
        registry.publish(small_net(0), {}, interrupting_plots)
    assert listing(registry.folder) == []
    assert registry.versions() == []
    version = publish(registry, 1)
    assert registry.versions() == [version]
    registry.load(version)


def test_a_publish_interrupted_while_saving_weights_leaves_nothing(registry, monkeypatch):
    publish(registry, 0)
    before = listing(registry.folder)

    def savez_then_interrupt(file, *args, **kwargs):
        file.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        publish(registry, 1)
    assert listing(registry.folder) == before
    monkeypatch.undo()
    assert publish(registry, 2) == "v0002"


def test_a_publish_failing_at_the_manifest_removes_its_weights(registry, monkeypatch):
    import registry.versions as versions_module

    def refuse(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(versions_module, "atomic_write_bytes", refuse)
    with pytest.raises(OSError, match="disk full"):
        publish(registry, 0)
    assert listing(registry.folder) == []


# -- measurements added after publishing ---------------------------------------------------------


def test_annotate_adds_a_key_and_a_plot_and_leaves_the_weights_alone(registry):
    version = publish(registry, 0)
    npz = registry.weights_path(version)
    before_bytes, before = npz.read_bytes(), registry.manifest(version)
    registry.plot_path(version, "robustness").write_bytes(b"\x89PNG robustness")

    updated = registry.annotate(version, "robustness", {"limit": 5, "variants": []}, plot="robustness")
    assert updated == registry.manifest(version)
    plots = ["accuracy", "w1", "robustness"]
    assert updated == {**before, "robustness": {"limit": 5, "variants": []}, "plots": plots}
    assert npz.read_bytes() == before_bytes and updated["sha256"] == sha256_of(npz)
    registry.load(version)  # still a valid version: the checksum matches

    again = registry.annotate(version, "robustness", {"limit": 9}, plot="robustness")
    assert again["robustness"] == {"limit": 9} and again["plots"].count("robustness") == 1
    assert listing(registry.folder).count(f"{version}.json") == 1  # no temp file left behind


@pytest.mark.parametrize("key", ["sha256", "sizes", "plots", "version", "parent", "Robust", "", "a b"])
def test_annotate_refuses_the_keys_that_describe_the_weights(registry, key):
    version = publish(registry, 0)
    before = registry.manifest(version)
    with pytest.raises(RegistryError, match="cannot be annotated"):
        registry.annotate(version, key, "changed")
    assert registry.manifest(version) == before


def test_annotate_refuses_unknown_versions_and_missing_plot_files(registry):
    version = publish(registry, 0)
    with pytest.raises(VersionNotFound):
        registry.annotate("v0007", "robustness", {})
    with pytest.raises(RegistryError, match=r"no plot file robustness\.png"):
        registry.annotate(version, "robustness", {}, plot="robustness")
    assert "robustness" not in registry.manifest(version)
