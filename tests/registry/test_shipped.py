"""The shipped baseline (`models/`, tracked) and the user's registry seeded from it (`state/models/`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry import Registry
from registry.shipped import DEFAULT_ROOT, SHIPPED_ROOT, seed, seed_default

ROOT = Path(__file__).resolve().parents[2]


def shipped_files(model: str = "mnist") -> list[str]:
    folder = SHIPPED_ROOT / model
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.startswith("."))


def test_seeding_copies_the_shipped_versions_plots_and_pointer(tmp_path: Path) -> None:
    versions = seed(tmp_path / "registry", "mnist")

    registry = Registry(tmp_path / "registry", "mnist")
    assert versions == registry.versions() == Registry(SHIPPED_ROOT, "mnist").versions()
    assert registry.current() == json.loads((SHIPPED_ROOT / "mnist" / "current").read_text())["version"]
    folder = tmp_path / "registry" / "mnist"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == shipped_files()
    registry.load()  # checksums and format hold in the copy
    assert [p.name for p in (tmp_path / "registry").iterdir()] == ["mnist"]  # no scratch left


def test_a_registry_that_exists_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    assert seed(tmp_path, "mnist") == []
    assert list((tmp_path / "mnist").iterdir()) == []
    assert seed(tmp_path, "fashion-mnist") == []  # nothing shipped for it: nothing made
    assert not (tmp_path / "fashion-mnist").exists()


def test_hidden_files_of_a_publisher_are_not_copied(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    seed(shipped, "mnist")
    (shipped / "mnist" / ".lock").write_text("")
    (shipped / "mnist" / ".staging-x").mkdir()
    seed(tmp_path / "user", "mnist", shipped)
    assert not [p for p in (tmp_path / "user" / "mnist").iterdir() if p.name.startswith(".")]


def test_only_the_default_folder_is_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert seed_default(Path("elsewhere"), "mnist") == []
    assert not Path("elsewhere").exists()
    assert seed_default(DEFAULT_ROOT, "mnist") == Registry(SHIPPED_ROOT, "mnist").versions()
    assert seed_default(tmp_path / DEFAULT_ROOT, "mnist") == []  # already there (same folder, absolute)


def test_the_trainer_writes_into_the_users_registry_never_into_models(tmp_path: Path) -> None:
    """`python -m trainer list` / `promote` from a checkout: the default registry is state/models."""
    env = {k: v for k, v in os.environ.items() if k != "MNIST_MODELS_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    before = shipped_files()
    shipped_current = (SHIPPED_ROOT / "mnist" / "current").read_bytes()

    def trainer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trainer", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    listed = trainer("list")
    assert listed.returncode == 0, listed.stderr
    assert "v0001" in listed.stdout and "v0002" in listed.stdout
    first = Registry(SHIPPED_ROOT, "mnist").versions()[0]
    moved = trainer("promote", first)
    assert moved.returncode == 0, moved.stderr
    assert Registry(tmp_path / "state" / "models", "mnist").current() == first
    assert shipped_files() == before and (SHIPPED_ROOT / "mnist" / "current").read_bytes() == shipped_current
