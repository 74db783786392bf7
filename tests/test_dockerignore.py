"""The image's build context is an allow-list (.dockerignore): every package of the product must be on
it, or the image builds and then fails at its first import (as it did when feedback/ arrived)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def allowed() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line[1:].strip("/") for line in lines if line.startswith("!")}


def test_every_top_level_package_goes_into_the_image() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert {"mlp", "service", "trainer"} <= packages  # the glob finds the product's packages
    assert packages - allowed() == set()


def test_the_context_keeps_out_what_the_image_does_not_run() -> None:
    assert not {"tests", "bench", ".git", ".venv", "data", "state"} & allowed()
