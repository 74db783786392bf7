"""An object-storage registry made ready to serve: its bucket created, an empty prefix seeded.

A cluster on object storage (MNIST_REGISTRY_URL=s3://bucket/prefix) starts with nothing there, and
replicas without a version are never ready, so a load balancer that waits for healthy replicas
would never start. Docker fills an empty `cluster-models` volume with the image's shipped baseline;
this does the same for a prefix: `python -m registry.object_seed` (the `s3-bucket` one-shot service
of docker-compose.s3.yml) creates the bucket when it is missing and, when the prefix holds no
version yet, uploads the shipped `models/<model>/` in the layout of registry.objects (weights and
plots first, the manifests next, the `current` pointer last). Every object is put with
`If-None-Match: *`, so nothing already there is ever overwritten, and a prefix that holds a version
is left exactly as it is. A store that is still starting is waited for, up to a deadline.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from registry.errors import RegistryError, StoreUnavailable
from registry.objects import ObjectRegistry, S3Client, make_client
from registry.shipped import SHIPPED_ROOT

log = logging.getLogger("registry.object_seed")

LAST = ("current",)  # written after every manifest: the version it names exists by then


def ensure_bucket(client: S3Client, bucket: str, wait_s: float = 60.0) -> bool:
    """Create `bucket` unless it exists; True when it was created here.

    Connection errors and 5xx answers (a store still starting) are retried for `wait_s` seconds;
    any other refusal (credentials, a bucket owned by someone else) fails at once.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.head_bucket(Bucket=bucket)
            return False
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return _create_bucket(client, bucket)
            if status < 500 or time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"object storage refused bucket {bucket!r}: {code} (HTTP {status})"
                ) from exc
        except BotoCoreError as exc:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"object storage did not answer within {wait_s:.0f} s: {exc}") from exc
        time.sleep(0.5)


def _create_bucket(client: S3Client, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    kwargs: dict[str, object] = {"Bucket": bucket}
    region = client.meta.region_name
    if region and region != "us-east-1":  # AWS refuses a location constraint of us-east-1 itself
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False  # another seeder was quicker
        raise
    return True


def seed(registry: ObjectRegistry, shipped: Path | None = None) -> list[str]:
    """Upload `shipped/<model>/` under the registry's prefix if it holds no version yet.

    Returns the versions uploaded ([] when the prefix already had one, or nothing is shipped).
    """
    source = Path(shipped or SHIPPED_ROOT) / registry.model
    if registry.versions() or not source.is_dir():
        return []
    # Hidden entries are a publisher's lock and temp files: never shipped (as registry.shipped).
    files = [
        p for p in source.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)
    ]

    def order(path: Path) -> tuple[int, str]:
        name = path.relative_to(source).as_posix()
        return (2 if name in LAST else 1 if path.suffix == ".json" else 0), name

    for path in sorted(files, key=order):
        _put_new(registry, path.relative_to(source).as_posix(), path.read_bytes())
    versions = registry.versions()
    log.info("seeded %s with the shipped %s (%s)", registry.where, registry.model, ", ".join(versions))
    return versions


def _put_new(registry: ObjectRegistry, name: str, data: bytes) -> None:
    """Put an object unless one is there already (`If-None-Match: *`)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        registry.client.put_object(
            Bucket=registry.bucket, Key=registry.base + name, Body=data, IfNoneMatch="*"
        )
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (409, 412) or exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
            return
        raise StoreUnavailable(f"object storage refused {name} in {registry.where}: {exc}") from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(f"object storage for {registry.where} did not answer: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m registry.object_seed",
        description="Create the registry's bucket if missing; seed an empty prefix with the baseline.",
    )
    parser.add_argument("url", nargs="?", default=os.environ.get("MNIST_REGISTRY_URL") or None)
    parser.add_argument("--model", default=os.environ.get("MNIST_MODEL_NAME") or "mnist")
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("MNIST_S3_ENDPOINT_URL") or None,
        help="an S3-compatible store (env MNIST_S3_ENDPOINT_URL; unset: AWS_ENDPOINT_URL, else AWS)",
    )
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the store (default 60)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not "Found credentials in environment"
    if not args.url:
        parser.error("give s3://bucket/prefix or set MNIST_REGISTRY_URL")
    try:
        client = make_client(args.endpoint_url)
        registry = ObjectRegistry(args.url, args.model, client=client)
        if ensure_bucket(client, registry.bucket, args.wait):
            log.info("created bucket %s", registry.bucket)
        if not seed(registry):
            log.info(
                "%s holds %s; left as it is", registry.where, ", ".join(registry.versions()) or "nothing"
            )
    except RegistryError as exc:  # StoreUnavailable is one
        print(f"registry.object_seed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
