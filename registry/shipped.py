"""The baseline the repository ships, and the user's own registry that starts as a copy of it.

`models/` in the checkout is the shipped baseline: tracked in git and never written by the default
commands. What a user trains, promotes and rolls back lives in their own registry, by default
`state/models/` (git-ignored): `python -m service` and `python -m trainer` copy the shipped versions
and pointer into it the first time they use it. So following the README never leaves untracked
files in `models/`, and a checkout's tests never see the versions its owner trained.

A registry given explicitly (MNIST_MODELS_DIR, --models-dir, the Docker volume) is used as it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "models"
DEFAULT_ROOT = Path("state") / "models"


def seed(root: Path, model: str, shipped: Path | None = None) -> list[str]:
    """Copy `shipped/<model>` (versions, plots, pointer) into `root/<model>` if that does not exist.

    Returns the versions copied ([] when there was nothing to do). The copy is made in a hidden
    folder beside the target and renamed into place, so a registry is either seeded whole or not at
    all, and two processes seeding at once end with one copy.
    """
    source, target = Path(shipped or SHIPPED_ROOT) / model, Path(root) / model
    if target.exists() or not source.is_dir() or source.resolve() == target.resolve():
        return []
    Path(root).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=f".seed-{model}-"))
    try:
        copied = scratch / model
        # Hidden entries are a publisher's lock, temp files and staging folders: never shipped.
        shutil.copytree(source, copied, ignore=shutil.ignore_patterns(".*"))
        try:
            os.rename(copied, target)
        except OSError:  # another process seeded it meanwhile (the target is a non-empty folder now)
            return []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    versions = sorted(p.stem for p in target.glob("v*.json"))
    log.info("seeded %s with the shipped %s (%s)", target, model, ", ".join(versions))
    return versions


def seed_default(root: Path, model: str) -> list[str]:
    """`seed` when `root` is the default registry, `state/models/`; any other folder is left as it is."""
    if Path(root).absolute() != DEFAULT_ROOT.absolute():
        return []
    return seed(root, model)
