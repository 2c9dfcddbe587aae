"""Scenarios run against both stacks (test_embedded.py, test_mosquitto.py): each is one
coroutine on a :class:`~tests.client.helpers.Target`."""

from __future__ import annotations

import asyncio

from messenger_client import Ack, Disconnected, Message, Outgoing, Presence, ReadReceipt, SendState, Typing

from tests.client.helpers import Recorder, Target, caught_up, connected, eventually, uid
from tests.client.proxy import Proxy


async def send_and_receive_both_ways(target: Target) -> None:
    """Messages both ways with their acks, typing, a read mark, and presence."""
    alice_id, bob_id = uid("alice"), uid("bob")
    async with (
        connected(target, alice_id) as (alice, alice_events),
        connected(target, bob_id) as (bob, bob_events),
    ):
        await caught_up(alice_events)
        await caught_up(bob_events)
        bob.watch_presence(alice_id)

        ack = await alice.send(bob_id, "hi bob 👋")
        assert (ack.status, ack.duplicate) == ("sent", False) and ack.id is not None
        got = await bob_events.expect(Message, "alice's message", id=ack.id)
        assert (got.sender, got.to, got.body, got.client_id) == (alice_id, bob_id, "hi bob 👋", ack.client_id)

        reply = await bob.send(alice_id, "hi alice\nsecond line")
        back = await alice_events.expect(Message, "bob's reply", id=reply.id)
        assert back.body == "hi alice\nsecond line" and back.id > got.id

        assert alice.typing(bob_id)
        assert not alice.typing(bob_id)  # throttled: one per typing_interval
        await bob_events.expect(Typing, "alice typing", sender=alice_id)

        bob.mark_read(got.id, peer=alice_id)
        await alice_events.expect(ReadReceipt, "bob's read mark", by=bob_id, up_to=got.id)

        await bob_events.expect(Presence, "alice online", user=alice_id, device=alice.device, online=True)
        assert bob.online(alice_id) is True
    # alice closed cleanly: she said offline herself (bob is closed too by now; his record stays)
    assert [a.client_id for a in alice_events.of(Ack)] == [ack.client_id]


async def dropped_connection_catches_up(target: Target) -> None:
    """Bob's connection drops (its socket closed under it). Messages sent while he is away, even
    those his other device marked read meanwhile (the server's own push on coming online has only
    unread ones), and those racing his reconnect arrive exactly once each, in id order; what he
    wrote while away is sent when he is back."""
    alice_id, bob_id = uid("alice"), uid("bob")
    async with (
        Proxy("127.0.0.1", target.mqtt_port) as proxy,
        connected(target, alice_id) as (alice, alice_events),
        connected(target, bob_id, port=proxy.port) as (bob, bob_events),
    ):
        await caught_up(bob_events)
        first = await alice.send(bob_id, "before the drop")
        await bob_events.expect(Message, "the first message", id=first.id)

        await proxy.cut()
        await bob_events.expect(Disconnected, "the drop")
        away = [await alice.send(bob_id, f"while away {n}") for n in range(5)]
        marked = await bob.rest.mark_read(ids=[a.id for a in away if a.id is not None])  # "another device"
        assert marked[0].up_to == away[-1].id
        written = bob.send(alice_id, "written while away")
        assert written.state is SendState.PENDING
        await proxy.restore()
        # these race the reconnect and its catch-up
        racing = await asyncio.gather(*(alice.send(bob_id, f"racing {n}").wait() for n in range(3)))

        sent = sorted(a.id for a in [first, *away, *racing] if a.id is not None)
        await bob_events.until(lambda: {m.id for m in bob_events.messages()} >= set(sent), "every message")
        await caught_up(bob_events, 2)
        # the server's push of unread messages when bob's presence came back online repeats the
        # first one (and the racing ones it finds stored by then): once it is dropped, look
        await eventually(lambda: bob.duplicates_dropped >= 1, "the repeats dropped")
        got = [m.id for m in bob_events.messages()]
        assert got == sent, "each message once, in id order"
        assert bob.connections == 2 and proxy.accepted == 2
        assert bob.last_id == sent[-1]

        ack = await written
        await alice_events.expect(Message, "what bob wrote while away", id=ack.id)


async def resend_is_stored_once(target: Target) -> None:
    """The same client id published three times: one stored message, acked each time with the
    same server id, delivered to the recipient once."""
    alice_id, bob_id = uid("alice"), uid("bob")
    async with (
        connected(target, alice_id) as (alice, alice_events),
        connected(target, bob_id) as (bob, bob_events),
    ):
        await caught_up(bob_events)
        outgoing = alice.send(bob_id, "only once", client_id=f"once-{uid('m')}")
        for attempts in (1, 2):
            await eventually(lambda n=attempts: outgoing.attempts >= n, f"publish #{attempts}")  # type: ignore[misc]
            alice.resend(outgoing)
        acks = await alice_events.until(
            lambda: (
                (found := [a for a in alice_events.of(Ack) if a.client_id == outgoing.client_id])
                and len(found) >= 3
                and found
            ),
            "three acks",
        )
        assert {a.id for a in acks} == {(await outgoing).id}
        assert sorted(a.duplicate for a in acks) == [False, True, True]

        history = await alice.rest.history(bob_id)
        assert [m.client_id for m in history.items].count(outgoing.client_id) == 1
        await eventually(lambda: bob.duplicates_dropped >= 2, "the redeliveries dropped")
        assert [m.id for m in bob_events.messages()] == [acks[0].id]


async def back_to_back_sends_keep_their_order(target: Target) -> None:
    """Messages sent back to back, without waiting for each ack, are stored in the order sent in
    each conversation (with two handlers, commands published together may be handled in either
    order: the client holds each until the one before it is answered); a second conversation
    goes on meanwhile."""
    alice_id, bob_id, carol_id = uid("alice"), uid("bob"), uid("carol")

    async def in_order(sent: list[Outgoing], events: Recorder) -> None:
        acks = await asyncio.gather(*(outgoing.wait() for outgoing in sent))
        ids = [a.id for a in acks if a.id is not None]
        assert len(ids) == len(sent) and ids == sorted(ids), f"stored in the order sent: {ids}"
        await events.until(lambda: len(events.messages()) >= len(sent), f"{len(sent)} messages")
        got = sorted(events.messages(), key=lambda m: m.id)
        assert [(m.id, m.body) for m in got] == [
            (i, o.command["body"]) for i, o in zip(ids, sent, strict=True)
        ]

    async with (
        connected(target, alice_id) as (alice, _),
        connected(target, bob_id) as (_, bob_events),
        connected(target, carol_id) as (_, carol_events),
    ):
        await caught_up(bob_events)
        await caught_up(carol_events)
        to_bob: list[Outgoing] = []
        to_carol: list[Outgoing] = []
        for n in range(12):
            to_bob.append(alice.send(bob_id, f"bob {n}"))
            if n % 3 == 0:
                to_carol.append(alice.send(carol_id, f"carol {n}"))
        await in_order(to_bob, bob_events)
        await in_order(to_carol, carol_events)
