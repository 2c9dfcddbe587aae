"""Errors of the embedded broker."""

from __future__ import annotations


class BrokerStartError(Exception):
    """The broker could not start (most often: a listener's port is taken)."""
