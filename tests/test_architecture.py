"""The import graph keeps the architecture: arrows only point down.

``launch/`` (the command line, ``serve`` and each role's factory) sits above everything; the
process packages (``api/ handler/ bridge/ broker/``) use the core (``messenger/``) and the topic
rules (``acl/``) but not each other; the core uses only ``acl/``. Every import counts, also one
inside a function or under ``TYPE_CHECKING``: a lazy import is still an arrow.

The Python client library (``clients/python/messenger_client``, its own distribution) stands
apart: it imports nothing of the server, nor any third-party package it does not declare, and
nothing of the server imports it.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {
    "acl",
    "messenger",
    "api",
    "handler",
    "bridge",
    "broker",
    "launch",
    "scripts",
    "bench",
    "tests",
    "messenger_client",
}
#: Packages that do not sit at the root of the repository.
LOCATION = {"messenger_client": ROOT / "clients" / "python" / "messenger_client"}

#: What each package may import from the project (itself included).
ALLOWED: dict[str, set[str]] = {
    "acl": {"acl"},
    "messenger": {"messenger", "acl"},
    "api": {"api", "messenger", "acl"},
    "handler": {"handler", "messenger", "acl"},
    "bridge": {"bridge", "messenger", "acl"},
    "broker": {"broker", "messenger", "acl"},
    "launch": {"launch", "api", "handler", "bridge", "broker", "messenger", "acl"},
    "messenger_client": {"messenger_client"},
}


def top_level_imports(source: str) -> set[str]:
    """Top-level names of the absolute imports of ``source``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def imported_packages(source: str) -> set[str]:
    """The project packages ``source`` imports."""
    return top_level_imports(source) & PROJECT


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
        for path in sorted(LOCATION.get(package, ROOT / package).rglob("*.py"))
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
        ("messenger_client", "from messenger.protocol import encode\n", "messenger"),
        ("api", "import messenger_client\n", "messenger_client"),
    ],
)
def test_an_upward_or_sideways_import_is_caught(package: str, source: str, target: str) -> None:
    assert violations(package, {"x.py": source}) == [f"x.py: imports {target}"]


def test_relative_and_third_party_imports_are_not_arrows() -> None:
    source = "from . import models\nfrom .db import engine\nimport fastapi\nfrom sqlalchemy import text\n"
    assert violations("messenger", {"x.py": source}) == []


def test_every_project_package_has_rules() -> None:
    at_root = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    clients = {p.parent.name for p in ROOT.glob("clients/*/*/__init__.py")}  # clients/python/messenger_client
    assert clients <= PROJECT, f"a client library without rules: {clients - PROJECT}"
    assert (at_root | clients) & (PROJECT - {"scripts", "bench", "tests"}) == set(ALLOWED)


def third_party_imports(source: str) -> set[str]:
    """What ``source`` imports that is neither the standard library nor the project."""
    return top_level_imports(source) - set(sys.stdlib_module_names) - PROJECT - {"__future__"}


def test_the_client_library_needs_only_its_declared_dependencies() -> None:
    """A client installs without the server's dependencies: it imports none of them."""
    pyproject = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {Requirement(text).name.replace("-", "_") for text in pyproject["project"]["dependencies"]}
    imported = set().union(*map(third_party_imports, sources("messenger_client").values()))
    assert imported <= declared, (
        f"imported but not declared in clients/python/pyproject.toml: {imported - declared}"
    )
    assert third_party_imports("import sqlalchemy\nfrom pydantic import BaseModel\nimport json\n") == {
        "sqlalchemy",
        "pydantic",
    }
