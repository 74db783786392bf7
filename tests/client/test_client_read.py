"""The client against a real service: reading digits, listing and moving versions, tokens, errors.

One service for the module, serving a copy of the shipped baseline (v0001) with an untrained
candidate beside it (v0002); no training here (test_client_train.py does that).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

import httpx
import pytest
from clientkit import (
    EXAMPLE_DIGITS,
    EXAMPLES,
    ROOT,
    Server,
    copy_baseline,
    publish_tiny,
    run_command,
    start_server,
)
from conftest import Mnist
from testkit import free_port

from client.api import FILES_PER_REQUEST
from client.config import STATE_DIR_ENV, TOKEN_ENV, URL_ENV


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("client-read")
    models = folder / "models"
    assert copy_baseline(models) == "v0001"
    assert publish_tiny(models, seed=1) == "v0002"
    server = start_server(folder, models, folder / "no-data")
    yield server
    server.stop()


def example_paths() -> list[str]:
    return [str(EXAMPLES / name) for name in EXAMPLE_DIGITS]


def table_rows(out: str) -> list[list[str]]:
    """The rows of a table the client printed, split on runs of two or more spaces."""
    lines = out.strip().splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


# -- predict --------------------------------------------------------------------------------------------


def test_predict_prints_a_table_of_the_digits_the_server_read(server: Server, mnist: Mnist) -> None:
    run = mnist("predict", *example_paths(), env=server.env())
    assert run.code == 0, run.err
    assert run.out.splitlines()[0].split() == ["FILE", "DIGIT", "CONFIDENCE", "DIGIT", "SCORE", "VERSION"]
    rows = table_rows(run.out)
    assert [row[0] for row in rows] == example_paths()
    assert [int(row[1]) for row in rows] == list(EXAMPLE_DIGITS.values())  # the baseline reads them all
    assert {row[-1] for row in rows} == {"v0001"}
    for row in rows:
        assert row[2].endswith(" %") and 50 <= float(row[2].removesuffix(" %")) <= 100


def test_predict_json_is_the_servers_answer_with_each_files_path(server: Server, mnist: Mnist) -> None:
    paths = example_paths()
    run = mnist("--json", "predict", *paths, env=server.env())
    assert run.code == 0, run.err
    answer = json.loads(run.out)
    files = [("file", (Path(p).name, Path(p).read_bytes())) for p in paths]
    direct = httpx.post(server.url + "/predict", files=files, timeout=10).json()
    assert answer["model"] == direct["model"] == "mnist"
    assert [item["path"] for item in answer["predictions"]] == paths
    for mine, theirs in zip(answer["predictions"], direct["predictions"], strict=True):
        assert re.fullmatch(r"[0-9a-f]{16}", mine["id"]) and mine["id"] != theirs["id"]  # one per answer
        assert mine == {**theirs, "path": mine["path"], "version": direct["version"], "id": mine["id"]}


def test_predict_sends_many_files_in_groups_and_keeps_their_order(server: Server, mnist: Mnist) -> None:
    paths = (example_paths() * 3)[: FILES_PER_REQUEST * 2 + 1]
    run = mnist("predict", "--json", *paths, env=server.env())
    assert run.code == 0, run.err
    predictions = json.loads(run.out)["predictions"]
    assert [p["path"] for p in predictions] == paths
    assert [p["digit"] for p in predictions] == [EXAMPLE_DIGITS[Path(p).name] for p in paths]


def test_predict_asks_the_version_given(server: Server, mnist: Mnist) -> None:
    run = mnist("predict", str(EXAMPLES / "seven.png"), "--version", "v0002", env=server.env())
    assert run.code == 0, run.err
    assert table_rows(run.out)[0][-1] == "v0002"


def test_predict_refusal_is_one_line_and_exit_1(server: Server, mnist: Mnist, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("a shopping list, not a digit\n")
    run = mnist("predict", str(not_an_image), env=server.env())
    assert (run.code, run.out) == (1, "")
    assert run.error_line.startswith("mnist: error: ")
    assert "(HTTP 415 unsupported_image_type)" in run.error_line

    blank = mnist("predict", str(EXAMPLES / "seven.png"), "--version", "v0099", env=server.env())
    assert blank.code == 1 and "(HTTP 404 version_not_found)" in blank.error_line


def test_predict_of_a_missing_file_is_a_usage_error(server: Server, mnist: Mnist, tmp_path: Path) -> None:
    run = mnist("predict", str(EXAMPLES / "seven.png"), str(tmp_path / "nope.png"), env=server.env())
    assert (run.code, run.out) == (2, "")
    assert "cannot read" in run.error_line and "nope.png" in run.error_line


# -- models, promote, rollback --------------------------------------------------------------------------


def test_models_marks_the_current_version(server: Server, mnist: Mnist) -> None:
    run = mnist("models", env=server.env())
    assert run.code == 0, run.err
    rows = {row[0].lstrip("* "): row for row in table_rows(run.out)[:-1] if row and row[0] != "current:"}
    assert rows["v0001"][0] == "* v0001" and rows["v0002"][0] == "v0002"
    assert rows["v0001"][1] == "99.03 %" and rows["v0001"][2] == "784-512-256-10"
    assert run.out.strip().splitlines()[-1] == "current: v0001"

    as_json = mnist("models", "--json", env=server.env())
    assert json.loads(as_json.out) == httpx.get(server.url + "/models").json()


def test_promote_and_rollback_move_the_pointer(server: Server, mnist: Mnist) -> None:
    promoted = mnist("promote", "v0002", env=server.env())
    assert (promoted.code, promoted.out) == (0, "mnist: v0002 is current (was v0001)\n"), promoted.err
    assert httpx.get(server.url + "/models").json()["current"] == "v0002"
    back = mnist("rollback", "--json", env=server.env())
    assert back.code == 0, back.err
    assert json.loads(back.out) == {"model": "mnist", "current": "v0001", "previous": "v0002", "ended": None}
    assert httpx.get(server.url + "/models").json()["current"] == "v0001"


def test_promote_of_an_unknown_version_says_so_in_one_line(server: Server, mnist: Mnist) -> None:
    run = mnist("promote", "v0042", env=server.env())
    assert (run.code, run.out) == (1, "")
    assert run.error_line.endswith("(HTTP 404 version_not_found)")


def test_without_a_token_the_refusal_says_where_tokens_come_from(
    server: Server, mnist: Mnist, tmp_path: Path
) -> None:
    env = {URL_ENV: server.url, STATE_DIR_ENV: str(tmp_path / "no-state")}
    run = mnist("promote", "v0002", env=env)
    assert run.code == 1
    assert "(HTTP 401 missing_token)" in run.error_line
    assert "--token" in run.error_line and TOKEN_ENV in run.error_line

    wrong = mnist("promote", "v0002", "--token", "not-the-token", env=env)
    assert wrong.code == 1 and "(HTTP 403 invalid_token)" in wrong.error_line
    assert httpx.get(server.url + "/models").json()["current"] == "v0001"


# -- the routing policy -----------------------------------------------------------------------------------


def test_policy_set_show_end_and_promote_as_the_http_routes_do(server: Server, mnist: Mnist) -> None:
    env = server.env()
    assert mnist("policy", "show", env=env).out == "mnist: current v0001\nrouting policy: none\n"
    run = mnist("policy", "set", "canary", "v0002", "--percent", "100", env=env)
    assert (run.code, run.out) == (0, "mnist: routing policy set: canary v0002 at 100 %\n"), run.err
    answered = json.loads(mnist("predict", str(EXAMPLES / "seven.png"), "--json", env=env).out)
    (item,) = answered["predictions"]
    assert item["version"] == "v0002"  # the canary answers all

    # the figures of the worker that answers: the service runs one, which answered the predict
    shown = mnist("policy", "show", env=env)
    lines = shown.out.splitlines()
    assert lines[:2] == ["mnist: current v0001", "routing policy: canary v0002 at 100 %"], shown.out
    assert lines[2].startswith("set ") and lines[2].endswith(" by api from 127.0.0.1")
    assert lines[3].startswith("live figures of worker pid ")
    header = ["VERSION", "ROLE", "REQUESTS", "LATENCY", "CONFIDENCE", "AGREEMENT", "DROPPED", "DIGITS 0-9"]
    assert re.split(r"\s{2,}", lines[4]) == header
    row = re.split(r"\s{2,}", lines[5].strip())
    assert row[:3] == ["v0002", "canary", "1"]
    assert row[-1].split()[item["digit"]] == "1"  # one request, read as the answer said
    as_json = json.loads(mnist("policy", "show", "--json", env=env).out)
    assert as_json["policy"]["mode"] == "canary" and as_json["live"]["versions"][0]["requests"] == 1

    ended = mnist("policy", "end", env=env)
    assert ended.code == 0 and ended.out.startswith("mnist: ended canary v0002 at 100 %\n"), ended.err
    assert ", ended " in ended.out and "v0002    canary" in ended.out  # its final figures
    assert mnist("policy", "end", env=env).out == "mnist: no routing policy to end\n"
    again = mnist("policy", "show", env=env).out.splitlines()
    assert again[1] == "routing policy: none" and "ended" in again[2]  # the last one's final figures

    assert mnist("policy", "set", "shadow", "v0002", env=env).out.endswith("shadow v0002 at 100 %\n")
    promoted = mnist("policy", "promote", env=env)
    assert promoted.code == 0, promoted.err
    assert promoted.out.splitlines()[0] == (
        "mnist: v0002 is current (was v0001); the routing policy (shadow v0002 at 100 %) ended with it"
    )
    assert httpx.get(server.url + "/models").json()["current"] == "v0002"
    assert mnist("rollback", env=env).code == 0  # as the other tests expect it

    refused = mnist("policy", "set", "canary", "v0001", "--percent", "5", env=env)  # current already
    assert refused.code == 1 and refused.error_line.endswith("(HTTP 409 already_current)")
    assert mnist("policy", "promote", env=env).error_line.endswith("(HTTP 409 no_policy)")
    anonymous = mnist("policy", "end", env={URL_ENV: server.url, STATE_DIR_ENV: str(server.folder / "none")})
    assert anonymous.code == 1 and "(HTTP 401 missing_token)" in anonymous.error_line


# -- token, ready, jobs -----------------------------------------------------------------------------------


def test_token_comes_from_the_option_the_environment_or_the_state_folder(
    server: Server, mnist: Mnist, tmp_path: Path
) -> None:
    state = {STATE_DIR_ENV: str(server.state_dir)}
    assert mnist("token", env=state).out == server.token + "\n"  # the file the service wrote
    assert mnist("token", env={**state, TOKEN_ENV: "from-env"}).out == "from-env\n"
    assert mnist("token", "--token", "given", env={**state, TOKEN_ENV: "from-env"}).out == "given\n"
    described = json.loads(mnist("token", "--json", env=state).out)
    assert described == {"token": server.token, "source": str(server.state_dir / "token")}

    missing = mnist("token", env={STATE_DIR_ENV: str(tmp_path / "empty")})
    assert (missing.code, missing.out) == (2, "")
    assert "no token found" in missing.error_line


def test_the_default_state_folder_is_state_under_the_working_folder(server: Server) -> None:
    """As a user runs it: from the folder the service was started in, nothing set but the URL."""
    run = run_command(["token"], env={}, cwd=server.folder)
    assert (run.code, run.out) == (0, server.token + "\n"), run.err
    promoted = run_command(["promote", "v0001"], env={URL_ENV: server.url}, cwd=server.folder)
    # The token was found and accepted: a move, or the 409 for the version already current.
    assert promoted.code == 0 or "(HTTP 409 already_current)" in promoted.err, promoted.err


def test_ready_names_the_version_served(server: Server, mnist: Mnist) -> None:
    run = mnist("ready", env=server.env())
    assert (run.code, run.out) == (0, "ready: mnist v0001\n"), run.err


def test_jobs_and_job(server: Server, mnist: Mnist) -> None:
    run = mnist("jobs", env=server.env())
    assert (run.code, run.out) == (0, "no training jobs yet\n"), run.err
    assert json.loads(mnist("jobs", "--json", env=server.env()).out) == {"jobs": []}
    unknown = mnist("job", "0123456789abcdef", env=server.env())
    assert unknown.code == 1 and "(HTTP 404 job_not_found)" in unknown.error_line
    cancel = mnist("cancel", "0123456789abcdef", env=server.env())
    assert cancel.code == 1 and "(HTTP 404 job_not_found)" in cancel.error_line


# -- the server out of reach, bad usage -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["models"], ["predict", str(EXAMPLES / "seven.png")], ["train", "--epochs", "1"], ["ready"]]
)
def test_an_unreachable_server_is_exit_3(mnist: Mnist, argv: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = mnist(*argv, "--url", url, "--token", "t")
    assert (run.code, run.out) == (3, "")
    assert run.error_line.startswith(f"mnist: error: cannot reach the service at {url}")


def test_ready_wait_gives_up_at_its_deadline(mnist: Mnist) -> None:
    run = mnist("ready", "--wait", "0.5", "--url", f"http://127.0.0.1:{free_port()}")
    assert run.code == 3 and "cannot reach" in run.error_line


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["predict"],
        ["train", "--epochs", "three"],
        ["train", "--hidden", "64,x"],
        ["promote"],
        ["frobnicate"],
        ["--url", "ftp://127.0.0.1:8000", "models"],
        ["policy"],
        ["policy", "set", "canary", "v0002"],  # a canary's share is not guessed
        ["policy", "set", "sticky", "v0002", "--percent", "101"],
        ["policy", "set", "blue-green", "v0002", "--percent", "5"],
    ],
)
def test_bad_usage_is_exit_2(mnist: Mnist, argv: list[str]) -> None:
    run = mnist(*argv)
    assert run.code == 2 and run.out == ""
    assert "error" in run.err.strip().splitlines()[-1]


def test_url_comes_from_the_option_or_the_environment(server: Server, mnist: Mnist) -> None:
    elsewhere = f"http://127.0.0.1:{free_port()}"
    assert mnist("ready", env={URL_ENV: server.url}).code == 0
    assert mnist("ready", "--url", server.url, env={URL_ENV: elsewhere}).code == 0
    assert mnist("--url", server.url, "ready", env={URL_ENV: elsewhere}).code == 0
    assert mnist("ready", env={URL_ENV: elsewhere}).code == 3


# -- how it is started -----------------------------------------------------------------------------------


def test_python_m_client_exits_with_the_codes(server: Server, tmp_path: Path) -> None:
    ok = run_command(["models"], env=server.env())
    assert ok.code == 0 and "* v0001" in ok.out
    refused = run_command(["promote", "v0077"], env=server.env())
    assert refused.code == 1 and "version_not_found" in refused.error_line
    usage = run_command(["predict"], env=server.env())
    assert usage.code == 2
    unreachable = run_command(["models", "--url", f"http://127.0.0.1:{free_port()}"], env={})
    assert unreachable.code == 3 and unreachable.error_line.startswith(
        "python -m client: error: cannot reach"
    )


def test_the_console_script_is_the_clients_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["mnist"].partition(":")
    entry = getattr(import_module(module), name)
    with pytest.raises(SystemExit) as exited:
        entry(["--help"])  # what the installed `mnist` script calls (with sys.argv)
    assert exited.value.code == 0
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "client*" in packages["find"]["include"]


# -- the README's lines, as pasted -----------------------------------------------------------------------


def readme_lines(start: str) -> list[str]:
    """The commands in README.md's shell blocks that start with `start`, comments cut off."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [
        line.split("  #")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith(start)
    ]


def test_the_readmes_curl_lines_read_the_examples(server: Server) -> None:
    lines = [line for line in readme_lines("curl") if "@examples/" in line]
    assert len(lines) >= 2
    for line in lines:
        command = line.replace("http://127.0.0.1:8000", server.url)
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        sent = re.findall(r"@(examples/\S+)", line)
        if "/feedback" in line:  # a correction: stored with the digit the line gives, the example's own
            assert answer["digit"] == EXAMPLE_DIGITS[Path(sent[0]).name] and answer["version"], line
            continue
        assert [p["digit"] for p in answer["predictions"]] == [EXAMPLE_DIGITS[Path(s).name] for s in sent], (
            line
        )


def test_the_readmes_client_line_reads_the_examples(server: Server) -> None:
    [line] = readme_lines(".venv/bin/python -m client predict")
    command = shlex.quote(sys.executable) + line.removeprefix(".venv/bin/python")
    env = {**os.environ, "PYTHONPATH": str(ROOT), URL_ENV: server.url}
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    read = {Path(row[0]).name: int(row[1]) for row in table_rows(done.stdout)}
    assert read == EXAMPLE_DIGITS
