"""Errors of the message handler."""

from __future__ import annotations


class HandlerError(Exception):
    """The handler cannot go on (e.g. it lost the broker for good)."""
