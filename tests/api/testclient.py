"""FastAPI's TestClient, imported once for every API test module.

Starlette 1.x wants httpx2 for its TestClient and warns (an error under the suite's
``filterwarnings = error``) when it falls back to httpx, which is what the dev extra installs.
Narrow ignore, at import time only.
"""

from __future__ import annotations

import warnings

from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with `starlette.testclient`", category=StarletteDeprecationWarning
    )
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]
