"""`python -m trainer policy`, and the routing policy in `list`, `promote` and `rollback`, on a real folder.

The same rules as the HTTP API (registry.candidate): a candidate must exist, load and not be
current; promoting it ends the experiment, promoting another version keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlp import MLP
from registry import Registry
from trainer.cli import main


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry folder with v0001 (current), v0002 and v0003."""
    for name in ("MNIST_MODELS_DIR", "MNIST_REGISTRY_URL", "MNIST_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    registry = Registry(tmp_path / "models")
    for seed in range(3):
        registry.publish(MLP([784, 8, 10], rng=np.random.default_rng(seed)), {"test_accuracy": 0.5})
    registry.promote("v0001")
    return tmp_path / "models"


def run(capsys: pytest.CaptureFixture[str], models: Path, *argv: str) -> tuple[int, str, str]:
    status = main([*argv, "--models-dir", str(models)])
    out, err = capsys.readouterr()
    return status, out, err


def test_set_show_list_and_end_a_policy(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, models, "policy", "show")[1] == "mnist: current v0001\nrouting policy: none\n"
    status, out, _ = run(capsys, models, "policy", "set", "canary", "v0002", "--percent", "10")
    assert (status, out) == (0, "mnist: routing policy set: canary v0002 at 10 %\n")

    status, out, _ = run(capsys, models, "policy", "show")
    lines = out.splitlines()
    assert lines[:2] == ["mnist: current v0001", "routing policy: canary v0002 at 10 %"]
    assert lines[2].startswith("set 20") and " by trainer@" in lines[2]
    shown = json.loads(run(capsys, models, "policy", "show", "--json")[1])
    assert (shown["current"], shown["policy"]["mode"], shown["policy"]["percent"]) == ("v0001", "canary", 10)

    listed = run(capsys, models, "list")[1].splitlines()
    assert listed[0].startswith("  v0003") and "<-" not in listed[0]
    assert listed[1].startswith("  v0002") and listed[1].endswith("  <- canary 10 %")
    assert listed[2].startswith("* v0001")
    assert listed[3] == "routing policy: canary v0002 at 10 % (python -m trainer policy)"

    assert run(capsys, models, "policy", "end")[1] == "mnist: ended canary v0002 at 10 %\n"
    assert run(capsys, models, "policy", "end")[1] == "mnist: no routing policy to end\n"
    assert "routing policy" not in run(capsys, models, "list")[1]


def test_a_candidate_that_cannot_serve_is_refused_in_one_line(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (models / "mnist" / "v0003.npz").write_bytes(b"not weights")
    for version, message in [
        ("v0042", "has no version v0042"),
        ("3", "'3' is not a version name"),
        ("v0001", "v0001 is the current version"),
        ("v0003", "v0003: v0003.npz has sha256"),
    ]:
        status, out, err = run(capsys, models, "policy", "set", "sticky", version, "--percent", "5")
        assert (status, out) == (1, "") and err.startswith("error: ") and message in err, err
    status, _, err = run(capsys, models, "policy", "promote")
    assert status == 1 and "has no routing policy" in err
    with pytest.raises(SystemExit) as usage:  # a canary's share is not guessed
        main(["policy", "set", "canary", "v0002", "--models-dir", str(models)])
    assert usage.value.code == 2 and "needs --percent" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["policy", "set", "canary", "v0002", "--percent", "101", "--models-dir", str(models)])
    assert "must be from 0 to 100" in capsys.readouterr().err
    assert Registry(models).policy() is None


def test_promoting_the_candidate_ends_the_experiment_whichever_command_does_it(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry(models)
    assert run(capsys, models, "policy", "set", "shadow", "v0002")[0] == 0  # shadow: 100 % by default
    assert registry.policy().percent == 100  # type: ignore[union-attr]

    out = run(capsys, models, "promote", "v0003")[1]  # another version: the shadow stays beside it
    assert out == "mnist: current is now v0003 (was v0001)\n" and registry.policy() is not None

    out = run(capsys, models, "promote", "v0002")[1]
    assert out.splitlines() == [
        "mnist: current is now v0002 (was v0003)",
        "the routing policy (shadow v0002 at 100 %) ended: v0002 is current",
    ]
    assert registry.policy() is None

    assert run(capsys, models, "policy", "set", "canary", "v0003", "--percent", "50")[0] == 0
    out = run(capsys, models, "rollback")[1]  # back to v0003, the canary's version
    assert out.splitlines()[1] == "the routing policy (canary v0003 at 50 %) ended: v0003 is current"

    assert run(capsys, models, "policy", "set", "sticky", "v0002", "--percent", "20")[0] == 0
    out = run(capsys, models, "policy", "promote")[1]
    assert out.splitlines() == [
        "mnist: current is now v0002 (was v0003)",
        "the routing policy (sticky v0002 at 20 %) ended: v0002 is current",
    ]
    assert registry.current() == "v0002" and registry.policy() is None
