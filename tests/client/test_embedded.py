"""The client library against the embedded stack (``messenger serve``: amqtt, SQLite).

Shared scenarios (tests/client/scenarios.py) plus what only needs one stack: resuming from a kept
``last_id`` after being offline, token refresh, history paging, tips declined with the billing
link, list messages, blocks and presence over REST.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import aiomqtt
import pytest
from aiomqtt import MqttError
from messenger_client import (
    ApiError,
    AuthError,
    ConnectError,
    Disconnected,
    Message,
    SendError,
    SendState,
    TipFailed,
    TipFailedError,
)
from messenger_client.tokens import token_expiry

from acl.principal import Role
from tests.client import scenarios
from tests.client.helpers import Tokens, caught_up, client_for, connected, eventually, polled, run, uid
from tests.client.proxy import Proxy
from tests.conftest import Stack


def test_send_and_receive_both_ways(embedded: Stack) -> None:
    run(scenarios.send_and_receive_both_ways(embedded))


def test_dropped_connection_catches_up(embedded: Stack) -> None:
    run(scenarios.dropped_connection_catches_up(embedded))


def test_resend_is_stored_once(embedded: Stack) -> None:
    run(scenarios.resend_is_stored_once(embedded))


def test_back_to_back_sends_keep_their_order(embedded: Stack) -> None:
    run(scenarios.back_to_back_sends_keep_their_order(embedded))


# --- only on this stack (none depends on the broker) ---


def test_offline_client_resumes_from_its_last_id(embedded: Stack) -> None:
    """A client closed and started again with the ``last_id`` it kept gets exactly what it
    missed: not the messages before (unread, the server pushes them again), nothing twice."""

    async def scenario() -> None:
        alice_id, bob_id = uid("alice"), uid("bob")
        async with connected(embedded, alice_id) as (alice, _):
            async with connected(embedded, bob_id) as (bob, bob_events):
                seen = [await alice.send(bob_id, f"seen {n}") for n in range(2)]
                await bob_events.until(lambda: len(bob_events.messages()) == 2, "two messages")
                kept = bob.last_id
            assert kept == seen[-1].id
            missed = [await alice.send(bob_id, f"missed {n}") for n in range(3)]

            async with connected(embedded, bob_id, last_id=kept) as (bob, bob_events):
                await caught_up(bob_events)
                # the push when bob came online repeats all five unread messages
                await eventually(lambda: bob.duplicates_dropped >= 5, "the unread repeats dropped")
                assert [m.id for m in bob_events.messages()] == [a.id for a in missed]

    run(scenario())


def test_token_is_refreshed_before_it_expires_and_the_connection_goes_on(embedded: Stack) -> None:
    async def scenario() -> None:
        alice_id, bob_id = uid("alice"), uid("bob")
        tokens = Tokens(alice_id, ttl=timedelta(seconds=2))
        async with (
            Proxy("127.0.0.1", embedded.mqtt_port) as proxy,
            connected(embedded, bob_id) as (_, bob_events),
            connected(embedded, alice_id, tokens, port=proxy.port) as (alice, alice_events),
        ):
            first = tokens.issued[0]
            expiry = token_expiry(first)
            assert expiry is not None
            # refreshed at half its life, and again: get_token is called on a timer
            await eventually(lambda: len(tokens.issued) >= 3 and time.time() > expiry + 0.5, "two refreshes")
            # the first token is dead now: the broker refuses it
            with pytest.raises(MqttError):
                async with aiomqtt.Client(
                    "127.0.0.1",
                    embedded.mqtt_port,
                    username=alice_id,
                    password=first,
                    identifier=f"{alice_id}/old",
                ):
                    pass
            # the connection made with it goes on, and REST uses the current token
            ack = await alice.send(bob_id, "still here")
            await bob_events.expect(Message, "the message after the refresh", id=ack.id)
            assert (await alice.rest.me()).user == alice_id
            assert alice.connections == 1 and not alice_events.of(Disconnected)
            # a reconnect connects with the current token
            await proxy.cut()
            await proxy.restore()
            await caught_up(alice_events, 2)
            assert alice.connections == 2

    run(scenario())


def test_history_pages_over_rest(embedded: Stack) -> None:
    async def scenario() -> None:
        alice_id, bob_id = uid("alice"), uid("bob")
        async with connected(embedded, alice_id) as (alice, _), connected(embedded, bob_id) as (bob, _):
            ids = [(await alice.send(bob_id, f"n{n}")).id for n in range(5)]
            first = await bob.rest.history(alice_id, limit=2)
            assert [m.id for m in first.items] == ids[:-3:-1] and first.next_before == ids[3]
            assert [m.id async for m in bob.rest.iter_history(alice_id, page_size=2)] == ids[::-1]
            oldest = await bob.rest.history(alice_id, after=0, limit=2)
            assert [m.id for m in oldest.items] == ids[:2] and oldest.next_after == ids[1]
            unread = await bob.rest.unread()
            assert [m.body for m in unread.items] == [f"n{n}" for n in range(5)]
            marks = await bob.rest.mark_read(up_to=ids[2], peer=alice_id)
            assert [(m.sender, m.up_to) for m in marks] == [(alice_id, ids[2])]
            (conversation,) = (await bob.rest.conversations()).items
            assert (conversation.peer, conversation.unread, conversation.last_message.id) == (
                alice_id,
                2,
                ids[-1],
            )

    run(scenario())


def test_declined_tip_fails_with_the_billing_link(embedded: Stack) -> None:
    async def scenario() -> None:
        member_id, creator_id = uid("member"), uid("creator")
        creator_tokens = Tokens(creator_id, Role.CREATOR)
        async with (
            connected(embedded, creator_id, creator_tokens),
            connected(embedded, member_id) as (member, events),
        ):
            outgoing = member.tip(creator_id, 500, "USD", "thanks!")
            with pytest.raises(SendError) as failed:
                await outgoing
            assert failed.value.code == "tip_failed" and failed.value.billing_url
            assert outgoing.state is SendState.FAILED
            event = await events.expect(TipFailed, "the tip_failed event", client_id=outgoing.client_id)
            assert event.billing_url == failed.value.billing_url and event.reason == "insufficient_funds"

            with pytest.raises(TipFailedError) as over_rest:
                await member.rest.tip(creator_id, 500, "USD", body="over REST")
            assert over_rest.value.billing_url == event.billing_url

            with pytest.raises(ValueError, match="currency"):
                member.tip(creator_id, 500, "usd")

    run(scenario())


def test_list_message_reaches_members(embedded: Stack) -> None:
    async def scenario() -> None:
        creator_id, bob_id = uid("creator"), uid("bob")
        async with (
            connected(embedded, creator_id, Tokens(creator_id, Role.CREATOR)) as (creator, _),
            connected(embedded, bob_id) as (_, bob_events),
        ):
            members = await creator.rest.create_list("VIP")
            assert await creator.rest.add_members(members.id, [bob_id]) == 1
            outgoing = creator.send_to_list(members.id, "new post")
            accepted = await outgoing.accepted()
            assert accepted.status in ("queued", "sent") and accepted.mass_message is not None
            done = await outgoing
            assert done.status == "sent"
            got = await bob_events.expect(Message, "the list copy", list_id=members.id)
            assert (got.sender, got.body) == (creator_id, "new post")
            assert (await creator.rest.mass_message(accepted.mass_message)).status == "sent"

    run(scenario())


def test_blocks_and_presence_over_rest(embedded: Stack) -> None:
    async def scenario() -> None:
        alice_id, bob_id = uid("alice"), uid("bob")
        async with (
            connected(embedded, alice_id) as (alice, _),
            connected(embedded, bob_id) as (bob, bob_events),
        ):
            await caught_up(bob_events)
            # bob announced himself after his catch-up; the presence bridge records it
            presence = await polled(lambda: alice.rest.presence(bob_id), lambda p: p.online, "bob online")
            assert [d.device for d in presence.devices] == [bob.device]

            assert (await bob.rest.block(alice_id)).user == alice_id
            assert await bob.rest.is_blocked(alice_id)
            assert [b.user for b in (await bob.rest.blocks()).items] == [alice_id]
            # sent into the void: acked, never delivered, not in bob's history
            ack = await alice.send(bob_id, "blocked")
            assert ack.status == "sent"
            assert ack.id not in [m.id for m in (await bob.rest.history(alice_id)).items]
            await bob.rest.unblock(alice_id)
            assert not await bob.rest.is_blocked(alice_id)

            with pytest.raises(ApiError) as refused:
                await bob.rest.block(bob_id)
            assert (refused.value.status, refused.value.code) == (400, "invalid_block")

    run(scenario())


def test_a_client_closed_as_it_comes_online_leaves_its_device_offline(embedded: Stack) -> None:
    """Closing says goodbye (presence offline) after anything else the client had to publish:
    an ``online`` announced just before must not come after it and leave the device online."""

    async def scenario() -> None:
        alice_id, bob_id = uid("alice"), uid("bob")
        async with connected(embedded, bob_id) as (bob, bob_events):
            bob.watch_presence(alice_id)
            for _ in range(3):
                async with connected(embedded, alice_id) as (_, alice_events):
                    await caught_up(alice_events)  # its "online" is being published right now
                # closed (cleanly: the Will is discarded, so only the goodbye says offline)
                presence = await polled(
                    lambda: bob.rest.presence(alice_id), lambda p: not p.online, "offline"
                )
                assert presence.devices == []
            await bob_events.until(lambda: bob.online(alice_id) is False, "alice offline over MQTT")

    run(scenario())


def test_refused_credentials_and_no_broker_fail_start(embedded: Stack) -> None:
    async def scenario() -> None:
        alice_id = uid("alice")
        impostor = Tokens(uid("mallory"))  # a valid token, of someone else
        with pytest.raises(AuthError):
            async with client_for(embedded, alice_id, impostor):
                pass
        assert len(impostor.issued) == 2  # refused, fetched a fresh one, refused again
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            nobody = unused.getsockname()[1]
        with pytest.raises(ConnectError, match="refused"):
            async with client_for(embedded, alice_id, port=nobody, connect_timeout=0.5):
                pass

    run(scenario())
