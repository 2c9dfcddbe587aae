"""ChildPublisher without a broker: batches are reported not taken, and stop is clean."""

from __future__ import annotations

import socket

from messenger.actions import Kind, Outbound
from messenger.child_publisher import ChildPublisher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_batch_the_broker_never_took_is_not_confirmed() -> None:
    publisher = ChildPublisher(user="svc", token="t", name="test-child-publisher")
    publisher.start("127.0.0.1", _free_port(), wait_s=None)  # nobody listens there
    try:
        pending = publisher.publish_tracked([Outbound("users/a/messages", b"{}", Kind.MESSAGE)] * 3)
        assert len(pending) == 3
        assert pending.wait(0.5) is False
    finally:
        publisher.stop()
    # after stop, a new batch starts a new child rather than failing the caller
    publisher.start("127.0.0.1", _free_port(), wait_s=None)
    try:
        assert (
            publisher.publish_tracked([Outbound("users/a/messages", b"{}", Kind.MESSAGE)]).wait(0.2) is False
        )
    finally:
        publisher.stop()
