"""The imports point one way (README "Layout"): a module that reaches the wrong way fails here.

`service -> {trainer (jobs only), registry, images, mlp, feedback}`, `trainer -> {registry, images, mlp,
feedback}`, `registry -> mlp`, and `mlp`, `images`, `feedback` and `client` stand alone. The check reads
each module's source (AST), so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mlp", "images", "registry", "feedback", "trainer", "service", "client")
ALLOWED = {
    "mlp": set(),
    "images": set(),
    "registry": {"mlp"},
    "feedback": {"registry"},  # the corrections' store (the service writes, the trainer reads); pgconnection
    "trainer": {
        "registry",
        "images",
        "mlp",
        "feedback",
    },  # images: the robustness suite reads uploads as /predict does
    "service": {"trainer", "registry", "images", "mlp", "feedback"},
    "client": set(),  # it speaks HTTP only: it ships without NumPy's side of the project
}
# The service reaches into the trainer for training jobs only: the job runner and its child, the
# /train body's choices and refusals, and the settings a job reads.
SERVICE_MODULES_USING_TRAINER = {
    "service/jobs/",
    "service/schemas_train.py",
    "service/errors.py",  # ConfigError: a job's parameters that cannot train, 422
    "service/settings.py",  # the robustness sample a job measures
}


def imported_packages(path: Path) -> set[str]:
    """The project packages `path` imports (absolute imports; relative ones stay inside a package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_the_layout_allows(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package] - {package})
        for path in modules(package)
    }
    assert not {module: bad for module, bad in wrong.items() if bad}


def test_the_service_uses_the_trainer_for_jobs_only() -> None:
    users = {
        str(path.relative_to(ROOT)) for path in modules("service") if "trainer" in imported_packages(path)
    }
    stray = {m for m in users if not any(m.startswith(allowed) for allowed in SERVICE_MODULES_USING_TRAINER)}
    assert not stray, f"service modules importing trainer outside the job side: {sorted(stray)}"


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from trainer.plots import x\n    import registry.pointer\n")
    assert imported_packages(module) == {"trainer", "registry"}
