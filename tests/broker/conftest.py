"""Fixtures of the broker tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "broker" / "mosquitto"


@pytest.fixture(scope="session")
def plugin_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Mosquitto plugin and its rules library, built with the plugin's own Makefile into a
    temporary directory (concurrent runs share no object files). A missing compiler or header is
    a failure, not a skip: the production broker depends on this code."""
    build = tmp_path_factory.mktemp("mosquitto-plugin")
    result = subprocess.run(
        ["make", "-C", str(PLUGIN_DIR), f"BUILD={build}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    if result.returncode != 0:
        pytest.fail(f"building the Mosquitto plugin failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    assert (build / "messenger_auth.so").is_file()
    return build
