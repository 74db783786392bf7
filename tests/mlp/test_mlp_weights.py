"""The `.npz` weight format: a faithful round trip, atomic saves, and every defect refused by name."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mlp import FORMAT_VERSION, MLP, WeightFileError, load_weights, read_meta, save_weights
from mlp.atomicfile import atomic_write, atomic_write_bytes

SIZES = [784, 12, 7, 10]


@pytest.fixture
def net() -> MLP:
    net = MLP(SIZES, rng=np.random.default_rng(0))
    net.params["b1"][...] = np.linspace(-1, 1, 12)  # non-zero biases, so they are checked too
    return net


@pytest.fixture
def good_arrays(net: MLP) -> dict[str, np.ndarray]:
    """The arrays of a valid file, for building broken ones."""
    meta = {
        "format_version": FORMAT_VERSION,
        "sizes": SIZES,
        "activation": "relu",
        "dtype": "float32",
        "input_scale": 1 / 255,
        "metadata": {},
    }
    return {"meta": np.array(json.dumps(meta)), **{k: v.copy() for k, v in net.params.items()}}


def write_npz(path: Path, arrays: dict[str, np.ndarray], **kwargs) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays, **kwargs)
    return path


def test_round_trip_gives_identical_params_sizes_and_metadata(tmp_path, net):
    path = tmp_path / "w.npz"
    metadata = {"version": "v0007", "test_accuracy": 0.9812, "curves": {"x": [1, 2]}, "note": "héllo"}
    save_weights(path, net, metadata)
    loaded, meta = load_weights(path)
    assert loaded.sizes == net.sizes == tuple(SIZES)
    assert list(loaded.params) == ["w1", "b1", "w2", "b2", "w3", "b3"]
    for name, value in net.params.items():
        assert loaded.params[name].dtype == np.float32
        np.testing.assert_array_equal(loaded.params[name], value)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["sizes"] == SIZES
    assert meta["metadata"] == metadata
    assert read_meta(path) == meta
    x = np.random.default_rng(1).integers(0, 256, (6, 784), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.predict_proba(x), net.predict_proba(x))
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]  # no temp file left behind


def test_a_saved_file_does_not_need_pickle(tmp_path, net):
    path = tmp_path / "w.npz"
    save_weights(path, net)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["b1", "b2", "b3", "meta", "w1", "w2", "w3"]
        assert data["meta"].dtype.kind == "U"


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nope.npz")


def break_file(kind: str, path: Path, arrays: dict[str, np.ndarray], valid: bytes) -> None:
    """Write into `path` the defect named `kind`."""
    meta = json.loads(str(arrays["meta"]))
    if kind == "junk bytes":
        path.write_bytes(b"this is not a zip file at all\n" * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(valid[: len(valid) // 2])
    elif kind == "bare npy":
        buffer = io.BytesIO()
        np.save(buffer, arrays["w1"])
        path.write_bytes(buffer.getvalue())
    elif kind == "missing meta":
        write_npz(path, {k: v for k, v in arrays.items() if k != "meta"})
    elif kind == "bad json meta":
        write_npz(path, {**arrays, "meta": np.array('{"format_version": 1, "sizes": [784')})
    elif kind == "meta not an object":
        write_npz(path, {**arrays, "meta": np.array("[784, 12, 7, 10]")})
    elif kind == "wrong format version":
        write_npz(path, {**arrays, "meta": np.array(json.dumps({**meta, "format_version": 2}))})
    elif kind == "wrong activation":
        write_npz(path, {**arrays, "meta": np.array(json.dumps({**meta, "activation": "tanh"}))})
    elif kind == "bad sizes":
        write_npz(path, {**arrays, "meta": np.array(json.dumps({**meta, "sizes": [784, 0, 10]}))})
    elif kind == "missing array":
        write_npz(path, {k: v for k, v in arrays.items() if k != "b2"})
    elif kind == "extra array":
        write_npz(path, {**arrays, "w4": np.zeros((10, 10), np.float32)})
    elif kind == "wrong shape":
        write_npz(path, {**arrays, "w2": arrays["w2"].T.copy()})
    elif kind == "float64":
        write_npz(path, {**arrays, "w1": arrays["w1"].astype(np.float64)})
    elif kind in ("nan", "inf"):
        bad = arrays["w3"].copy()
        bad[2, 3] = np.nan if kind == "nan" else -np.inf
        write_npz(path, {**arrays, "w3": bad})
    else:  # pragma: no cover
        raise AssertionError(kind)


DEFECTS = {  # kind -> what the message must say
    "junk bytes": "not a readable .npz",
    "empty": "not a readable .npz",
    "truncated": "not a readable .npz",
    "bare npy": "not a .npz weight file",
    "missing meta": "no 'meta' record",
    "bad json meta": "'meta' is not valid JSON",
    "meta not an object": "'meta' must be a JSON object",
    "wrong format version": "format version 2",
    "wrong activation": "activation 'tanh'",
    "bad sizes": "bad layer sizes",
    "missing array": r"missing arrays \['b2'\]",
    "extra array": r"unexpected arrays \['w4'\]",
    "wrong shape": r"w2 has shape \(7, 12\), expected \(12, 7\)",
    "float64": "w1 has dtype float64, expected float32",
    "nan": "w3 contains NaN or infinite values",
    "inf": "w3 contains NaN or infinite values",
}


@pytest.mark.parametrize("kind", list(DEFECTS))
def test_each_defect_is_refused_with_a_message_naming_it(tmp_path, net, good_arrays, kind):
    valid = tmp_path / "valid.npz"
    save_weights(valid, net)
    path = tmp_path / "model.npz"
    break_file(kind, path, good_arrays, valid.read_bytes())
    with pytest.raises(WeightFileError, match=DEFECTS[kind]) as info:
        load_weights(path)
    assert str(info.value).startswith("model.npz: ")  # names the file, too
    if kind not in ("missing array", "extra array", "wrong shape", "float64", "nan", "inf"):
        with pytest.raises(WeightFileError, match=DEFECTS[kind]):
            read_meta(path)


def test_the_broken_file_builder_builds_a_loadable_file_when_nothing_is_broken(tmp_path, good_arrays):
    # Guards the test above: its files fail for the defect put in, not for a mistake in the builder.
    net, meta = load_weights(write_npz(tmp_path / "ok.npz", good_arrays))
    assert net.sizes == tuple(SIZES) and meta["format_version"] == FORMAT_VERSION


class _Trap:
    """Unpickling this would create `path`: proof that a loader executed pickled code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (str(self.path), 0o777, True))  # leaves no open file behind


@pytest.mark.parametrize("where", ["w1", "meta"])
def test_a_pickled_object_array_is_refused_and_never_unpickled(tmp_path, good_arrays, where):
    sentinel = tmp_path / "pwned"
    trap = np.array([_Trap(sentinel), _Trap(sentinel)], dtype=object)
    path = write_npz(tmp_path / "model.npz", {**good_arrays, where: trap}, allow_pickle=True)
    with pytest.raises(WeightFileError, match="pickle") as info:
        load_weights(path)
    assert str(info.value).startswith("model.npz: ")
    assert not sentinel.exists()
    with np.load(path, allow_pickle=True) as data:  # the trap is real: unpickling does run it
        data[where]
    assert sentinel.exists()


class _Boom(Exception):
    pass


@pytest.mark.parametrize("error", [_Boom, KeyboardInterrupt])
def test_a_failing_save_leaves_the_old_file_intact_and_no_temp_files(tmp_path, net, monkeypatch, error):
    path = tmp_path / "w.npz"
    save_weights(path, net, {"generation": 1})
    before = path.read_bytes()

    def half_then_fail(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise error("disk fell off")

    monkeypatch.setattr(np, "savez", half_then_fail)
    net.params["w1"][...] = 0
    with pytest.raises(error):
        save_weights(path, net, {"generation": 2})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]
    monkeypatch.undo()
    assert load_weights(path)[1]["metadata"] == {"generation": 1}


def test_atomic_write_replaces_whole_files_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"

    def fail(f):
        f.write(b"partial")
        raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["f.bin"]
