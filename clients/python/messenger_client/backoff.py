"""Reconnect delays: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay before retry number ``attempt`` (0 for the first): uniform in
    ``[0, min(cap, base * 2**attempt)]``.

    Full jitter (rather than a fixed exponential schedule) spreads the reconnects of many
    clients that lost the broker at the same moment, so that they do not all come back in the
    same instant; the expected delay still grows exponentially up to the cap.
    """

    base: float = 1.0
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base):
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base} cap={self.cap}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay of retry ``attempt``."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # 2**attempt overflows a float past ~1024; the cap is reached long before
        return min(self.cap, self.base * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0, self.ceiling(attempt))
