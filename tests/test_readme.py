"""The README (and the other documents it links) stays true: links resolve, the commands it shows
exist in the form it shows them, and its tables match the code (presets, settings).

The quick-start itself is walked on a copy of the repository by tests/test_first_run.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.schemas_train import TrainRequest
from service.settings import Settings
from trainer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
# What a user reads; bench/README.md is the maintainers' record of measurements (its links are checked
# too, but it names the machine the figures were taken on).
USER_DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "docker.md", ROOT / "examples" / "README.md"]
DOCUMENTS = [*USER_DOCUMENTS, ROOT / "bench" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = document.read_text()
    headings = {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}
    return headings | set(re.findall(r'<a id="([^"]+)"', text))


def links(document: Path) -> list[str]:
    text = CODE_BLOCK.sub("", document.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [a or b for a, b in LINK.findall(text)]


def shell_lines(document: Path) -> list[str]:
    """Every command line of the document's shell blocks, comments cut off, continuations joined."""
    lines: list[str] = []
    for language, block in CODE_BLOCK.findall(document.read_text()):
        if language not in ("sh", "bash", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def table(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with `header`, as lists of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(document: Path) -> None:
    found = links(document)
    assert found or document != ROOT / "README.md", "no links found: the pattern is broken"
    for target in found:
        if re.match(r"https?://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        assert file.is_relative_to(ROOT), f"{document.name}: {target} points outside the repository"
        assert file.exists(), f"{document.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(file), f"{document.name}: no anchor #{anchor} in {file.name}"


@pytest.mark.parametrize("document", USER_DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(document: Path) -> None:
    text = document.read_text()
    assert "../shared" not in text and "/work/" not in text
    assert "<!--" not in text.split("\n", 1)[0], "a leftover draft comment"


def test_commands_use_one_python_the_virtualenvs() -> None:
    """`python -m trainer ...` fails outside the venv: every command shown runs .venv/bin/python."""
    for document in DOCUMENTS:
        for line in shell_lines(document):
            words = line.split()
            assert words[0] not in ("python", "python3", "pip"), f"{document.name}: {line}"


def test_every_trainer_and_client_command_shown_exists() -> None:
    from client.cli import build_parser as client_parser

    trainer_commands = set(build_parser()._subparsers._group_actions[0].choices)
    client_commands = set(client_parser()._subparsers._group_actions[0].choices)
    seen = {"trainer": 0, "client": 0}
    for line in shell_lines(ROOT / "README.md"):
        match = re.match(r"\.venv/bin/python -m (trainer|client) (\S+)", line)
        if not match:
            continue
        module, command = match.groups()
        seen[module] += 1
        if module == "trainer" and command in ("FILE_NAME", "sample", "worker"):
            continue  # the research script's form; a cluster's queue worker (its own parser)
        assert command in (trainer_commands if module == "trainer" else client_commands), line
    assert seen["trainer"] >= 5 and seen["client"] >= 5, seen


def preset_names() -> list[str]:
    rows = table(README, "| preset |")
    return [row[0].strip("`") for row in rows]


def test_every_preset_in_the_table_is_accepted_by_the_cli_and_the_api() -> None:
    names = preset_names()
    assert names == ["seed", "fast", "baseline", "best"]
    for name in names:
        assert build_parser().parse_args(["train", "--preset", name]).preset == name
        assert TrainRequest.model_validate({"preset": name}).preset == name
        assert "|" not in "".join(table(README, "| preset |")[names.index(name)])
    schema = TrainRequest.model_json_schema()["properties"]["preset"]
    assert sorted(schema["enum"]) == sorted(names)  # and the API accepts no preset the README hides


def test_the_settings_table_lists_every_setting_and_only_those() -> None:
    rows = table(README, "| variable |")
    documented = {row[0].strip("`"): row for row in rows}
    settings = {f"MNIST_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert set(documented) - {"PROMETHEUS_MULTIPROC_DIR"} == set(settings)
    for variable, field in settings.items():
        default = documented[variable][1].strip("`")
        expected = "unset" if field.default is None else str(field.default)
        assert default == expected, f"{variable}: README says {default}, the settings {expected}"
        assert documented[variable][2] == field.description, variable
