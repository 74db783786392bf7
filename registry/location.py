"""Which registry a setting names: a local folder (the default) or `s3://bucket/prefix`.

The trainer, the job workers and the service all open their registry through here, so the same
setting (`MNIST_REGISTRY_URL`, else the models folder) means the same versions everywhere.
"""

from __future__ import annotations

from pathlib import Path

from registry.base import BaseRegistry
from registry.versions import Registry


def open_registry(
    location: str | Path,
    model: str = "mnist",
    endpoint_url: str | None = None,
    database_url: str | None = None,
    who: str | None = None,
) -> BaseRegistry:
    """The registry at `location`: `s3://...` is object storage (boto3), anything else a folder.

    `endpoint_url` points boto3 at an S3-compatible store (MinIO, moto); unset, boto3 reads
    AWS_ENDPOINT_URL and the usual AWS settings itself. With `database_url` (PostgreSQL), the
    `current` pointer is a row there (registry.dbpointer) and `who` is recorded with each move.
    """
    registry: BaseRegistry
    if isinstance(location, str) and location.startswith("s3://"):
        from registry.objects import ObjectRegistry, make_client

        registry = ObjectRegistry(location, model, client=make_client(endpoint_url))
    else:
        registry = Registry(Path(location), model)
    if database_url:
        from registry.dbpointer import DatabasePointerRegistry

        registry = DatabasePointerRegistry(registry, database_url, who)
    return registry
