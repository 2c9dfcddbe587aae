"""The scenarios of ``python -m bench``: each module defines ``SCENARIO``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from bench.stacks import Stack
from bench.suite import Progress, Result


@dataclass(frozen=True)
class Scenario:
    name: str
    #: one line for ``--help``
    summary: str
    #: the scenario's own options (added to the common ones); names must not clash across scenarios
    add_arguments: Callable[[argparse._ArgumentGroup], None]
    #: measure on a running stack; ``args.quick`` asks for a run of a few seconds (the suite's tests)
    run: Callable[[Stack, argparse.Namespace, Progress], Result]
