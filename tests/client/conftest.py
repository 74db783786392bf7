"""Fixtures of the client tests (the helpers are in clientkit.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from clientkit import CLIENT_ENV, Run

from client.cli import main

Mnist = Callable[..., Run]


@pytest.fixture
def mnist(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Mnist:
    """`mnist(*argv, env={...})`: the client's `main` in this process, with only `env`'s settings.

    It runs in an empty folder, so that the default token file (`state/token`) is never the one of
    a service the developer runs from the checkout.
    """
    monkeypatch.chdir(tmp_path)

    def run(*argv: str, env: dict[str, str] | None = None) -> Run:
        with monkeypatch.context() as patch:
            for name in CLIENT_ENV:
                patch.delenv(name, raising=False)
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            capsys.readouterr()
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's own exits (usage errors, --help)
                code = exc.code if isinstance(exc.code, int) else 2
            out, err = capsys.readouterr()
        return Run(code, out, err)

    return run
