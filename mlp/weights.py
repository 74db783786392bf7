"""The `.npz` weight format: the contract between the trainer that writes and the service that reads.

A file holds the parameter arrays (`w1, b1, w2, b2, ...`, float32) and `meta`, a JSON string
(a plain unicode array, so loading never needs pickle) with the format version, the layer sizes,
the activation, the input scaling and free-form metadata from the trainer. A file is written to a
temporary name in the same folder, flushed to disk, then renamed, so a reader never sees half a file.
Loading checks every property the network relies on and names the defect it finds.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mlp.atomicfile import atomic_write
from mlp.network import DTYPE, INPUT_SCALE, MLP, param_names, validate_sizes

FORMAT_VERSION = 1
ACTIVATION = "relu"


class WeightFileError(ValueError):
    """A weight file that must not be loaded, with the reason in the message."""


def save_weights(path: Path, net: MLP, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write `net` and its metadata to `path`."""
    path = Path(path)
    meta = {
        "format_version": FORMAT_VERSION,
        "sizes": list(net.sizes),
        "activation": ACTIVATION,
        "dtype": np.dtype(DTYPE).name,
        "input_scale": INPUT_SCALE,
        "metadata": metadata or {},
    }
    arrays = {name: np.ascontiguousarray(value) for name, value in net.params.items()}
    # (NumPy's stubs read the keyword arrays as its `allow_pickle` flag.)
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))  # type: ignore[arg-type]


def read_meta(path: Path) -> dict[str, Any]:
    """The `meta` record of a weight file, without loading the arrays."""
    with _open_npz(path, name=Path(path).name) as data:
        return _parse_meta(path, data)


def load_weights(path: Path, content: bytes | None = None) -> tuple[MLP, dict[str, Any]]:
    """Load and validate a weight file; returns the network and the file's `meta` record.

    `content`: the file's bytes when the caller has already read them (to check a checksum, say);
    they are parsed instead of reading the file again, so what was checked is what is loaded.
    """
    path = Path(path)
    with _open_npz(path if content is None else io.BytesIO(content), name=path.name) as data:
        meta = _parse_meta(path, data)
        sizes = meta["sizes"]
        expected = set(param_names(len(sizes) - 1))
        present = set(data.files) - {"meta"}
        if missing := sorted(expected - present):
            raise WeightFileError(f"{path.name}: missing arrays {missing}")
        if extra := sorted(present - expected):
            raise WeightFileError(f"{path.name}: unexpected arrays {extra}")
        shapes = MLP.param_shapes(sizes)
        params = {}
        for name in sorted(expected):
            try:
                array = data[name]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise WeightFileError(f"{path.name}: array {name} is unreadable: {exc}") from exc
            if array.dtype != DTYPE:
                raise WeightFileError(f"{path.name}: {name} has dtype {array.dtype}, expected float32")
            if array.shape != shapes[name]:
                raise WeightFileError(
                    f"{path.name}: {name} has shape {array.shape}, expected {shapes[name]} "
                    f"for layer sizes {sizes}"
                )
            if not np.isfinite(array).all():
                raise WeightFileError(f"{path.name}: {name} contains NaN or infinite values")
            params[name] = array
    net = MLP(sizes, init=None)
    net.load_params(params)
    return net, meta


def _open_npz(source: Path | BinaryIO, name: str) -> Any:
    if not hasattr(source, "read"):  # read whole: np.load leaves a file it opened open when it refuses it
        source = io.BytesIO(Path(source).read_bytes())
    try:
        data = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightFileError(f"{name}: not a readable .npz weight file ({exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy array loads as an ndarray
        raise WeightFileError(f"{name}: a single .npy array, not a .npz weight file")
    return data


def _parse_meta(path: Path, data: Any) -> dict[str, Any]:
    name = Path(path).name
    if "meta" not in data.files:
        raise WeightFileError(f"{name}: no 'meta' record; not a weight file of this project")
    try:
        meta = json.loads(str(data["meta"]))
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightFileError(f"{name}: 'meta' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise WeightFileError(f"{name}: 'meta' must be a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightFileError(
            f"{name}: format version {meta.get('format_version')!r}, this program reads {FORMAT_VERSION}"
        )
    if meta.get("activation") != ACTIVATION:
        raise WeightFileError(f"{name}: activation {meta.get('activation')!r}, expected {ACTIVATION!r}")
    try:
        meta["sizes"] = list(validate_sizes(meta.get("sizes") or []))
    except (TypeError, ValueError) as exc:
        raise WeightFileError(f"{name}: bad layer sizes: {exc}") from exc
    return meta
