"""Messenger core: settings, models, migrations, repositories and the shared protocol."""

from importlib.metadata import PackageNotFoundError, version

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = version("messenger-mqtt")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
