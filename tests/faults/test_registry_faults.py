"""Issue 11, items 2-5: a damaged registry is reported, refused or repaired, never a 500.

Files are damaged by hand as an operator would (truncated weights, a hand-edited pointer, a
broken manifest), and publishers are killed with SIGKILL in the middle of writing a version.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import AUTH, MakeClient, poll, publish, write_pointer
from testkit import ROOT

from registry import CorruptVersion, Registry
from trainer.cli import main as trainer_main

# -- 2. rollback validates like promote -------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_rollback_onto_a_damaged_version_is_refused_naming_it(
    make_client: MakeClient, registry: Registry
) -> None:
    publish(registry, 0, promote=True)
    publish(registry, 1, promote=True)
    truncate(registry.weights_path("v0001"))
    pointer_before = registry.pointer_path.read_bytes()

    with make_client() as client:
        answer = client.post("/models/rollback", headers=AUTH)

        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == "corrupt_version"
        assert "v0001" in answer.json()["detail"]
        assert registry.pointer_path.read_bytes() == pointer_before
        assert client.get("/models").json()["current"] == "v0002"
        assert client.get("/readyz").json()["version"] == "v0002"
    with make_client() as client:  # and after a restart it still serves
        assert client.get("/readyz").json()["version"] == "v0002"


def test_the_registry_refuses_to_roll_back_onto_a_damaged_version(registry: Registry) -> None:
    publish(registry, 0, promote=True)
    publish(registry, 1, promote=True)
    path = registry.weights_path("v0001")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(CorruptVersion, match="v0001"):
        registry.rollback()
    assert registry.current() == "v0002"


# -- 3. the pointer -------------------------------------------------------------------------------

BAD_POINTERS = [
    '"v0002"',
    "[]",
    "null",
    "42",
    '{"version": 2}',
    '{"version": "2"}',
    '{"history": []}',
    '{"version": "v0002", "history": "v0001"}',
    '{"version": "v0002", "history": [1]}',
    '{"version": "v0009", "history": []}',  # valid shape, names a version that does not exist
]


def failures(client) -> float:
    value = client.app.state.services.metrics.registry.get_sample_value(
        "mnist_model_loads_total", {"outcome": "failure"}
    )
    return value or 0.0


@pytest.mark.parametrize("text", BAD_POINTERS)
def test_a_corrupt_pointer_is_reported_logged_once_and_repaired_by_a_promote(
    make_client: MakeClient, registry: Registry, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    publish(registry, 0, promote=True)
    publish(registry, 1, promote=True)
    with make_client() as client:
        caplog.set_level(logging.WARNING)
        write_pointer(registry, text)
        poll(lambda: failures(client) >= 1, 10.0, what="the watcher to refuse the pointer")
        for _ in range(5):  # what the watcher does every interval: nothing more to say
            assert client.app.state.services.models.refresh() is False
        mentions = [r for r in caplog.records if "pointer" in r.getMessage()]
        assert len(mentions) == 1, [r.getMessage() for r in mentions]
        assert failures(client) == 1

        listed = client.get("/models")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["current"] is None
        assert "corrupt" in body["pointer_error"]
        assert [v["version"] for v in body["versions"]] == ["v0002", "v0001"]
        assert not any(v["current"] for v in body["versions"])

        for method, path in (("POST", "/models/rollback"), ("GET", "/models/current")):
            answer = client.request(method, path, headers=AUTH)
            assert (answer.status_code, answer.json()["error"]) == (409, "corrupt_pointer"), answer.text
        assert client.get("/readyz").json()["version"] == "v0002"  # what is loaded keeps serving
        families = client.get("/metrics").text
        assert not re.search(r'mnist_\w+\{[^}]*version="\d', families)  # never an integer version label

        repaired = client.post("/models/v0001/promote", headers=AUTH)
        assert repaired.status_code == 200, repaired.text
        assert repaired.json() == {"model": "mnist", "current": "v0001", "previous": None, "ended": None}
        assert json.loads(registry.pointer_path.read_text())["version"] == "v0001"
        body = client.get("/models").json()
        assert (body["current"], body["pointer_error"]) == ("v0001", None)
        assert client.get("/readyz").json()["version"] == "v0001"
        assert client.post("/models/v0002/promote", headers=AUTH).status_code == 200
        assert client.post("/models/rollback", headers=AUTH).json()["current"] == "v0001"


def test_the_trainer_reports_a_corrupt_pointer_and_a_promote_repairs_it(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(registry, 0, promote=True)
    write_pointer(registry, "[]")
    m = ["--models-dir", str(registry.root)]

    assert trainer_main(["list", *m]) == 0
    out, err = capsys.readouterr()
    assert "v0001" in out and "corrupt" in err
    assert trainer_main(["rollback", *m]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert trainer_main(["promote", "v0001", *m]) == 0
    assert registry.current() == "v0001"


# -- 4. one damaged manifest ---------------------------------------------------------------------

DAMAGED_MANIFESTS = ["{half", "[]", '"v0002"', "null", '{"sizes": "784-8-10"}', '{"test_accuracy": "high"}']


@pytest.mark.parametrize("text", DAMAGED_MANIFESTS)
def test_one_damaged_manifest_is_listed_as_damaged_and_the_rest_stands(
    make_client: MakeClient, registry: Registry, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for seed in range(3):
        publish(registry, seed, promote=True)
    (registry.folder / "v0002.json").write_text(text)

    with make_client() as client:
        listed = client.get("/models")
        single = client.get("/models/v0002")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["current"] == "v0003" and body["pointer_error"] is None
    assert [v["version"] for v in body["versions"]] == ["v0003", "v0002", "v0001"]
    good, bad, also_good = body["versions"]
    assert bad["damaged"] and "manifest" in bad["damaged"], bad
    assert (good["damaged"], good["sizes"], good["test_accuracy"]) == (None, [784, 8, 10], 0.52)
    assert (also_good["damaged"], also_good["test_accuracy"]) == (None, 0.5)
    try:
        stored = json.loads(text)
    except ValueError:
        stored = None
    if isinstance(stored, dict):  # an object with a field of the wrong type: shown as stored, to diagnose
        assert (single.status_code, single.json()) == (200, stored)
    else:
        assert (single.status_code, single.json()["error"]) == (409, "corrupt_version")

    assert trainer_main(["list", "--models-dir", str(registry.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["*", "v0003"],
        ["v0002", "damaged:"],
        ["v0001", "0.5000"],
    ]
    assert trainer_main(["list", "--json", "--models-dir", str(registry.root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], bool(r["damaged"])) for r in rows] == [
        ("v0003", False),
        ("v0002", True),
        ("v0001", False),
    ]


def test_the_trainer_lists_a_damaged_registry_in_a_real_process(registry: Registry) -> None:
    publish(registry, 0, promote=True)
    publish(registry, 1)
    (registry.folder / "v0001.json").write_text("[]")
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "list", "--models-dir", str(registry.root)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["v0002", "*"]
    assert "damaged" in result.stdout.splitlines()[1]


# -- 5. litter ----------------------------------------------------------------------------------

STALLING_PUBLISHER = """
import sys, time
from pathlib import Path
import numpy as np
from mlp import MLP
from registry import Registry

def plots(folder, net):
    (folder / "accuracy.png").write_bytes(b"half a pict")
    Path(sys.argv[2]).write_text("now")
    time.sleep(120)
    return ["accuracy"]

Registry(Path(sys.argv[1])).publish(MLP([784, 8, 10], rng=np.random.default_rng(5)), {}, plots)
"""

# Dies by SIGKILL at its n-th rename (os.rename or os.replace): every step of writing a version.
DYING_PUBLISHER = """
import os, signal, sys
from pathlib import Path
import numpy as np
from mlp import MLP
from registry import Registry

calls = 0
real_rename = os.rename

def rename(src, dst, **kwargs):
    global calls
    calls += 1
    if calls == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rename(src, dst, **kwargs)

os.rename = os.replace = rename

def plots(folder, net):
    (folder / "w1.png").write_bytes(b"a whole picture")
    return ["w1"]

Registry(Path(sys.argv[1])).publish(MLP([784, 8, 10], rng=np.random.default_rng(6)), {}, plots)
print(calls)
"""


def run_publisher(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def under_version_names(registry: Registry) -> list[str]:
    """Everything on disk whose name is (or starts with) a version name, files in folders included."""
    return sorted(
        str(p.relative_to(registry.folder))
        for p in registry.folder.rglob("*")
        if re.match(r"v\d+", p.relative_to(registry.folder).parts[0])
    )


def complete(version: str, plots: tuple[str, ...] = ()) -> list[str]:
    return sorted([version, f"{version}.json", f"{version}.npz", *[f"{version}/{p}.png" for p in plots]])


def test_a_publisher_killed_while_writing_leaves_nothing_under_a_version_name(
    make_client: MakeClient, registry: Registry, tmp_path: Path
) -> None:
    publish(registry, 0, promote=True)
    marker = tmp_path / "in-the-middle"
    publisher = run_publisher(STALLING_PUBLISHER, str(registry.root), str(marker))
    try:
        poll(marker.exists, 60.0, 0.02, "the publisher to be half way")
    finally:
        publisher.send_signal(signal.SIGKILL)
        publisher.communicate(timeout=10)  # reaps it and closes its pipes

    assert under_version_names(registry) == complete("v0001")
    assert registry.versions() == ["v0001"]
    with make_client() as client:  # the service sweeps what dead publishers left at start-up
        assert client.get("/models").json()["versions"][0]["version"] == "v0001"
    assert sorted(p.name for p in registry.folder.iterdir()) == [
        ".lock",
        "current",
        "v0001",
        "v0001.json",
        "v0001.npz",
    ]
    assert publish(registry, 1) == "v0002"  # the number was not lost


@pytest.mark.parametrize("fatal_rename", [1, 2, 3, 4, 5])
def test_a_publisher_killed_at_any_rename_leaves_no_version_and_loses_no_number(
    registry: Registry, fatal_rename: int
) -> None:
    publish(registry, 0, promote=True)
    publisher = run_publisher(DYING_PUBLISHER, str(registry.root), str(fatal_rename))
    out, _ = publisher.communicate(timeout=60)

    if publisher.returncode == 0:  # it needed fewer renames than this: a complete version
        assert int(out) < fatal_rename
        assert registry.versions() == ["v0001", "v0002"]
        registry.load("v0002")
        return
    assert publisher.returncode == -signal.SIGKILL
    assert registry.versions() == ["v0001"]
    for name in under_version_names(registry):  # at most whole files of the unfinished version
        assert not name.endswith(".tmp") and not name.startswith("v0002/."), name
    assert publish(registry, 1) == "v0002"
    assert under_version_names(registry) == complete("v0001") + complete("v0002")
    assert [p.name for p in registry.folder.iterdir() if p.name.startswith(".")] == [".lock"]
