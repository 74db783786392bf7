"""The registry on S3-compatible object storage: one storage's whole protocol, hence one module.

The same versions as a local folder, written once by conditional puts.

Layout under `s3://<bucket>/<prefix>/<model>/`, the same names as a local folder:

    v0001.npz          weights; put with `If-None-Match: *`, which is how a publisher claims the number
    v0001/<plot>.png   plots (and curves.csv, the numbers behind them)
    v0001.json         manifest; put last (also `If-None-Match: *`): the version exists from here on
    current            the pointer (registry.pointer); replaced with `If-Match: <etag>`, so two
                       promotes at once never lose one another (the loser reads again and retries)
    policy             the routing policy beside it (registry.policy); absent: none

There is no lock to take on object storage, so the number is claimed by the weights' conditional
put: two publishers that picked the same number find out there, the loser takes the next one, and
neither can ever overwrite the other's files. A publisher killed half way leaves a numbered weight
file (and perhaps plots) without a manifest: invisible as a version, skipped by the next number,
removed by `sweep` once it is older than `ORPHAN_GRACE_S`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlp import MLP, save_weights
from registry.base import (
    ANNOTATION_KEY_PATTERN,
    HISTORY_KEPT,
    NUMBERED,
    PUBLISHED_KEYS,
    BaseRegistry,
    Loader,
    PlotWriter,
    check_model_name,
    check_plot_name,
    parse_version,
    refuse_current,
    utc_now,
)
from registry.errors import (
    CorruptPointer,
    CorruptPolicy,
    CorruptVersion,
    NothingToRollBack,
    RegistryError,
    StoreUnavailable,
    VersionNotFound,
)
from registry.pointer import NO_POINTER, Move, Pointer, is_version_name, parse_pointer
from registry.policy import Policy, parse_policy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # not installed: only a name for the type checker
else:
    S3Client = Any

ORPHAN_GRACE_S = 600.0  # a numbered object without a manifest this old is a dead publisher's
CLAIM_TRIES = 50  # publishers racing for numbers; each loss moves on to a fresh listing
POINTER_TRIES = 20  # promotes racing on the pointer


class StorageUnavailable(StoreUnavailable):
    """Object storage did not answer, or refused us (credentials, a missing bucket)."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); RegistryError for anything else."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise RegistryError(f"{url!r} is not an object storage URL like s3://bucket/prefix")
    return parsed.netloc, parsed.path.strip("/")


def make_client(endpoint_url: str | None = None) -> S3Client:
    """A boto3 S3 client; `endpoint_url` for S3-compatible stores (MinIO, moto, ...).

    Without one, boto3 reads AWS_ENDPOINT_URL itself, and credentials and region the usual way
    (environment, ~/.aws, instance role). Retries are boto3's standard mode.
    """
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
    return boto3.client("s3", endpoint_url=endpoint_url or None, config=config)


class ObjectRegistry(BaseRegistry):
    """Versions of one model under `s3://bucket/prefix/<model>/`."""

    def __init__(self, url: str, model: str = "mnist", client: S3Client | None = None):
        self.model = check_model_name(model)
        self.bucket, prefix = parse_s3_url(url)
        self.base = f"{prefix}/{model}/" if prefix else f"{model}/"
        self.client = client if client is not None else make_client()

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.base.rstrip('/')}"

    # -- reading -------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        names = {entry["name"] for entry in self._entries()}
        found = [n[:-5] for n in names if n.endswith(".json") and is_version_name(n[:-5])]
        return sorted(v for v in found if f"{v}.npz" in names)

    def manifest(self, version: str) -> dict[str, Any]:
        return self._manifest_and_etag(parse_version(version))[0]

    def pointer(self) -> Pointer:
        data, _ = self._get("current")
        if data is None:
            return NO_POINTER
        pointer = parse_pointer(data, self.model)
        if pointer.version is not None and pointer.version not in self.versions():
            raise CorruptPointer(
                f"the `current` pointer of {self.model!r} is corrupt: it names {pointer.version}, which is "
                "not a complete version; promote a version to repair it"
            )
        return pointer

    def policy(self) -> Policy | None:
        data, _ = self._get("policy")
        return None if data is None else parse_policy(data, self.model)

    def policy_stamp(self) -> Hashable | None:
        return self._etag("policy")

    def set_policy(self, policy: Policy) -> None:
        self._put("policy", policy.to_bytes(), "application/json")

    def clear_policy(self, version: str | None = None) -> Policy | None:
        """Conditional on the policy read (`If-Match` is not on deletes everywhere: a re-read instead)."""
        try:
            stored = self.policy()
        except CorruptPolicy:
            stored = None
            if version is None:
                self._delete("policy")
        if stored is None or (version is not None and stored.version != version):
            return None
        self._delete("policy")
        return stored

    def read_weights(self, version: str) -> bytes:
        version = parse_version(version)
        data, _ = self._get(f"{version}.npz")
        if data is None:
            raise VersionNotFound(f"model {self.model!r} has no weight file for {version}")
        return data

    def pointer_stamp(self) -> Hashable | None:
        return self._etag("current")

    def weights_stamp(self, version: str) -> Hashable | None:
        return self._etag(f"{parse_version(version)}.npz")

    def read_plot(self, version: str, name: str) -> bytes | None:
        return self._get(f"{parse_version(version)}/{check_plot_name(name)}.png")[0]

    # -- writing -------------------------------------------------------------------------------

    def write_plot(self, version: str, name: str, data: bytes) -> None:
        self._put(f"{parse_version(version)}/{check_plot_name(name)}.png", data, "image/png")

    def publish(
        self,
        net: MLP,
        manifest: dict[str, Any],
        write_plots: PlotWriter | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> str:
        """Write a new immutable version and return its name; it is a candidate until promoted.

        `before_commit` runs once everything is made and nothing is uploaded yet: whatever it
        raises stops the publish and leaves no trace.
        """
        with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
            plot_dir = Path(tmp) / "plots"
            plot_dir.mkdir()
            plots = write_plots(plot_dir, net) if write_plots else []
            if before_commit is not None:
                before_commit()
            for _ in range(CLAIM_TRIES):
                version = self._next_version()
                record = self._version_record(version, net, manifest, plots)
                npz = Path(tmp) / f"{version}.npz"
                save_weights(npz, net, metadata={k: v for k, v in record.items() if k != "plots"})
                weights = npz.read_bytes()
                npz.unlink()
                record["sha256"] = hashlib.sha256(weights).hexdigest()
                if not self._put(f"{version}.npz", weights, "application/octet-stream", if_none_match=True):
                    continue  # another publisher took this number: list again
                try:
                    for path in sorted(plot_dir.iterdir()):  # the plots, and their data (curves.csv)
                        kind = "image/png" if path.suffix == ".png" else "application/octet-stream"
                        self._put(f"{version}/{path.name}", path.read_bytes(), kind)
                    body = json.dumps(record, indent=1).encode()
                    if not self._put(f"{version}.json", body, "application/json", if_none_match=True):
                        raise RegistryError(
                            f"{self.where}/{version}.json appeared while it was being published"
                        )
                except BaseException:
                    self._remove_version_files(version)
                    raise
                return version
        raise RegistryError(f"could not claim a version number in {self.where} after {CLAIM_TRIES} tries")

    def annotate(self, version: str, key: str, value: Any, plot: str | None = None) -> dict[str, Any]:
        """Add (or replace) one measurement of a version: the manifest is replaced `If-Match` its
        etag, so two annotators cannot lose each other's key; the weights never change."""
        version = parse_version(version)
        if key in PUBLISHED_KEYS or not ANNOTATION_KEY_PATTERN.match(key):
            raise RegistryError(f"{key!r} cannot be annotated: it is not a free manifest key")
        if plot is not None and self._etag(f"{version}/{check_plot_name(plot)}.png") is None:
            raise RegistryError(f"{version} has no plot file {plot}.png to list")
        for _ in range(POINTER_TRIES):
            manifest, etag = self._manifest_and_etag(version)
            manifest[key] = value
            if plot is not None and plot not in manifest.get("plots", []):
                manifest["plots"] = [*manifest.get("plots", []), plot]
            body = json.dumps(manifest, indent=1).encode()
            if self._put(f"{version}.json", body, "application/json", if_match=etag):
                return manifest
        raise RegistryError(f"{version}: its manifest kept changing while it was being annotated")

    def promote(self, version: str, load: Loader | None = None) -> Move:
        """Make `version` current; returns (previous, new). A corrupt pointer is overwritten.

        A policy naming `version` ends right after the pointer moved (two objects: no transaction
        spans them; in between, a serving process routes the candidate's share to it as `current`).
        """
        version = parse_version(version)
        (load or self.load)(version)  # never point at a version that would not load

        def move(pointer: Pointer) -> tuple[Pointer, str | None]:
            refuse_current(self.model, pointer.version, version)
            history = list(pointer.history)
            if pointer.version:
                history.append(pointer.version)
            return Pointer(version, tuple(history[-HISTORY_KEPT:]), utc_now()), pointer.version

        previous = self._move_pointer(move, corrupt_ok=True)
        return self._moved("promote", previous, version, self.clear_policy(version))

    def rollback(self, load: Loader | None = None) -> Move:
        """Move the pointer back to the version that was current before; returns (previous, new)."""

        def move(pointer: Pointer) -> tuple[Pointer, tuple[str | None, str]]:
            existing = set(self.versions())
            history = [v for v in pointer.history if v in existing]
            if not history or pointer.version is None:
                raise NothingToRollBack(f"model {self.model!r} has no earlier version to roll back to")
            target = history.pop()
            try:
                (load or self.load)(target)
            except CorruptVersion as exc:
                raise CorruptVersion(f"cannot roll back to {target}: {exc}") from exc
            return Pointer(target, tuple(history), utc_now()), (pointer.version, target)

        previous, target = self._move_pointer(move, corrupt_ok=False)
        return self._moved("rollback", previous, target, self.clear_policy(target))

    def sweep(self) -> list[str]:
        """Remove numbered objects without a manifest once they are older than ORPHAN_GRACE_S."""
        entries = list(self._entries(recursive=True))
        manifests = {e["name"][:-5] for e in entries if e["name"].endswith(".json")}
        old = datetime.now(UTC) - timedelta(seconds=ORPHAN_GRACE_S)
        removed = []
        for entry in entries:
            head = entry["name"].split("/", 1)[0]
            numbered = NUMBERED.match(head)
            if not numbered or entry["name"].endswith(".json"):
                continue
            version = f"v{int(numbered.group(1)):04d}"
            if version not in manifests and entry["modified"] < old:
                self._delete(entry["name"])
                removed.append(entry["name"])
        return removed

    # -- inside -------------------------------------------------------------------------------

    def _move_pointer(self, move: Callable[[Pointer], tuple[Pointer, Any]], corrupt_ok: bool) -> Any:
        """Read the pointer, compute its new value, write it if nobody else wrote in between."""
        for _ in range(POINTER_TRIES):
            data, etag = self._get("current")
            try:
                pointer = NO_POINTER if data is None else parse_pointer(data, self.model)
            except CorruptPointer:
                if not corrupt_ok:
                    raise
                pointer = NO_POINTER
            new, answer = move(pointer)
            body = new.to_bytes()
            written = (
                self._put("current", body, "application/json", if_none_match=True)
                if etag is None
                else self._put("current", body, "application/json", if_match=etag)
            )
            if written:
                return answer
        raise RegistryError(f"the pointer in {self.where} kept changing; try again")

    def _next_version(self) -> str:
        numbers = [int(m.group(1)) for e in self._entries() if (m := NUMBERED.match(e["name"].rstrip("/")))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def _manifest_and_etag(self, version: str) -> tuple[dict[str, Any], str]:
        data, etag = self._get(f"{version}.json")
        if data is None or etag is None:
            raise VersionNotFound(f"model {self.model!r} has no version {version}")
        try:
            manifest = json.loads(data)
        except ValueError as exc:
            raise CorruptVersion(f"{version}: manifest is not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise CorruptVersion(
                f"{version}: manifest is not a JSON object (found {type(manifest).__name__})"
            )
        return manifest, etag

    def _remove_version_files(self, version: str) -> None:
        """Best effort after a failed publish: nothing of it is visible either way (no manifest)."""
        try:
            for entry in self._entries(recursive=True):
                if entry["name"] == f"{version}.npz" or entry["name"].startswith(f"{version}/"):
                    self._delete(entry["name"])
        except RegistryError:
            pass

    # -- the S3 calls, each mapped to the registry's errors -----------------------------------

    def _entries(self, recursive: bool = False) -> Iterator[dict[str, Any]]:
        """The objects under the model's prefix (names relative to it); folders as `v0001/`."""
        with self._errors():
            paginator = self.client.get_paginator("list_objects_v2")
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.base}
            if not recursive:
                kwargs["Delimiter"] = "/"
            for page in paginator.paginate(**kwargs):
                for obj in page.get("Contents", []):
                    yield {"name": obj["Key"][len(self.base) :], "modified": obj["LastModified"]}
                for common in page.get("CommonPrefixes", []):
                    yield {"name": common["Prefix"][len(self.base) :], "modified": datetime.now(UTC)}

    def _get(self, name: str) -> tuple[bytes | None, str | None]:
        """An object's bytes and etag; (None, None) when it does not exist."""
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self.base + name)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None, None
                raise
            return answer["Body"].read(), answer["ETag"]

    def _etag(self, name: str) -> str | None:
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.base + name)["ETag"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise

    def _put(
        self,
        name: str,
        data: bytes,
        content_type: str,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> bool:
        """Write an object; False when its condition failed (it exists / it changed meanwhile)."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.base + name, "Body": data}
        kwargs["ContentType"] = content_type
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        with self._errors():
            try:
                self.client.put_object(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                    return False
                raise
        return True

    def _delete(self, name: str) -> None:
        with self._errors():
            self.client.delete_object(Bucket=self.bucket, Key=self.base + name)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turns boto's exceptions into StorageUnavailable naming the store; the registry's own pass."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageUnavailable(
                f"object storage refused a request for {self.where}: "
                f"{error.get('Code')} {error.get('Message', '')}".rstrip()
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"object storage for {self.where} did not answer: {exc}") from exc
