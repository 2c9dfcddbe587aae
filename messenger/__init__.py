"""Messenger core: settings, models, migrations, repositories and the shared protocol."""

__version__ = "0.1.0"
