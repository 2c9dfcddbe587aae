"""amqtt's per-message PUBACK timeout logs are folded into one line per interval."""

from __future__ import annotations

import logging

from broker.server import _AmqttPubackTimeouts


def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("amqtt.broker", level, __file__, 1, message, None, None)


def test_timeouts_are_folded_and_other_records_pass() -> None:
    folding = _AmqttPubackTimeouts(interval_s=3600)

    first = record("Timeout waiting for PUBACK for packet ID 1", logging.ERROR)
    assert folding.filter(first)  # the first one is reported at once, as a summary
    assert first.levelno == logging.WARNING
    assert "1 slow or late PUBACKs" in first.getMessage()

    assert not folding.filter(record("Timeout waiting for PUBACK for packet ID 2"))
    assert not folding.filter(record("Received PUBACK for unknown pending message Id: '2'"))
    assert folding.filter(record("Listener 'default' bind to 127.0.0.1:1884"))


def test_the_summary_counts_what_was_folded() -> None:
    folding = _AmqttPubackTimeouts(interval_s=0)
    assert folding.filter(record("Timeout waiting for PUBACK for packet ID 1"))
    later = record("Received PUBACK for unknown pending message Id: '7'")
    assert folding.filter(later)
    assert later.getMessage().startswith("1 slow or late PUBACKs")
