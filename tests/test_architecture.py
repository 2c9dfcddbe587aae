"""The import graph keeps the architecture: arrows only point down.

``launch/`` (the command line, ``serve`` and each role's factory) sits above everything; the
process packages (``api/ handler/ bridge/ broker/``) use the core (``messenger/``) and the topic
rules (``acl/``) but not each other; the core uses only ``acl/``. Every import counts, also one
inside a function or under ``TYPE_CHECKING``: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"acl", "messenger", "api", "handler", "bridge", "broker", "launch", "scripts", "bench", "tests"}

#: What each package may import from the project (itself included).
ALLOWED: dict[str, set[str]] = {
    "acl": {"acl"},
    "messenger": {"messenger", "acl"},
    "api": {"api", "messenger", "acl"},
    "handler": {"handler", "messenger", "acl"},
    "bridge": {"bridge", "messenger", "acl"},
    "broker": {"broker", "messenger", "acl"},
    "launch": {"launch", "api", "handler", "bridge", "broker", "messenger", "acl"},
}


def imported_packages(source: str) -> set[str]:
    """The project packages ``source`` imports (top-level names of absolute imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


def violations(package: str, files: dict[str, str]) -> list[str]:
    """``file: imports X`` for each import of ``package``'s ``files`` (name -> source) not allowed."""
    return [
        f"{name}: imports {target}"
        for name, source in sorted(files.items())
        for target in sorted(imported_packages(source) - ALLOWED[package])
    ]


def sources(package: str) -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text()
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_sits_below_it(package: str) -> None:
    files = sources(package)
    assert files, f"no Python files found in {package}/"
    assert violations(package, files) == []


@pytest.mark.parametrize(
    ("package", "source", "target"),
    [
        ("messenger", "from api.app import create_app\n", "api"),
        ("messenger", "def f():\n    import handler.consumer\n", "handler"),
        (
            "messenger",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from broker import server\n",
            "broker",
        ),
        ("messenger", "import launch.cli as cli\n", "launch"),
        ("handler", "from bridge.bridge import PresenceBridge\n", "bridge"),
        ("api", "from launch.roles import Store\n", "launch"),
    ],
)
def test_an_upward_or_sideways_import_is_caught(package: str, source: str, target: str) -> None:
    assert violations(package, {"x.py": source}) == [f"x.py: imports {target}"]


def test_relative_and_third_party_imports_are_not_arrows() -> None:
    source = "from . import models\nfrom .db import engine\nimport fastapi\nfrom sqlalchemy import text\n"
    assert violations("messenger", {"x.py": source}) == []


def test_every_project_package_has_rules() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} & PROJECT
    assert on_disk - {"scripts", "bench", "tests"} == set(ALLOWED)
