"""Write the Mosquitto plugin's limits header from :mod:`acl.limits` (their one definition).

    make plugin-limits                       # or: .venv/bin/python -m scripts.plugin_limits
    .venv/bin/python -m scripts.plugin_limits --check    # exit 1 if the committed header is stale

The header is committed: the broker image builds the plugin from ``broker/mosquitto/`` alone,
without Python. ``tests/broker/test_mosquitto_limits.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acl.limits import c_header

HEADER = Path(__file__).resolve().parent.parent / "broker" / "mosquitto" / "limits_generated.h"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the header is up to date")
    args = parser.parse_args()
    wanted = c_header()
    current = HEADER.read_text(encoding="utf-8") if HEADER.exists() else None
    if args.check:
        if current != wanted:
            print(f"{HEADER} is stale: run `make plugin-limits`", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        HEADER.write_text(wanted, encoding="utf-8")
        print(f"wrote {HEADER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
