"""Parsers of what the server sends: every payload is untrusted until it has the protocol's shape.

Each parser returns a typed value or raises :class:`ProtocolError`; a caller drops the payload
and carries on. Numbers are strict (``true`` is not ``1``, ``"12"`` is not ``12``), strings are
strings, unknown extra fields are ignored (a newer server may add some).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from .events import (
    Ack,
    CommandError,
    Message,
    Presence,
    ReadReceipt,
    ServerEvent,
    Synced,
    TipFailed,
    TipInfo,
    Typing,
    UnknownEvent,
)
from .exceptions import ProtocolError
from .models import (
    Block,
    Conversation,
    Device,
    MassMessage,
    Me,
    MemberList,
    NamePage,
    Page,
    PresenceInfo,
    ReadMark,
    TipRecord,
)
from .topics import MAX_ID, is_user_id

T = TypeVar("T")
#: A payload larger than this is not a Messenger payload (the brokers cap publishes at 256 KiB).
MAX_PAYLOAD_BYTES = 256 * 1024


class Fields:
    """Typed access to one JSON object's members; a missing or ill-typed member is a ProtocolError."""

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, dict):
            raise ProtocolError(f"{what}: expected a JSON object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.what = what

    def _fail(self, key: str, expected: str) -> ProtocolError:
        value = self.data.get(key, "<missing>")
        return ProtocolError(f"{self.what}: {key!r} must be {expected}, got {value!r:.60}")

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def user_id(self, key: str) -> str:
        value = self.text(key)
        if not is_user_id(value):
            raise self._fail(key, "a user id")
        return value

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_ID:
            raise self._fail(key, f"an integer in [{minimum}, 2^63-1]")
        return value

    def opt_integer(self, key: str, minimum: int = 0) -> int | None:
        return None if self.data.get(key) is None else self.integer(key, minimum)

    def flag(self, key: str, default: bool | None = None) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def opt_number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e9:
            raise self._fail(key, "a non-negative number")
        return float(value)

    def moment(self, key: str) -> datetime:
        value = self.text(key)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise self._fail(key, "an ISO 8601 time") from None
        if moment.utcoffset() is None:
            raise self._fail(key, "a time with a time zone")
        return moment

    def opt_moment(self, key: str) -> datetime | None:
        return None if self.data.get(key) is None else self.moment(key)

    def obj(self, key: str) -> Fields:
        return Fields(self.data.get(key), f"{self.what}.{key}")

    def opt_obj(self, key: str) -> Fields | None:
        return None if self.data.get(key) is None else self.obj(key)

    def items(self, key: str, parse: Callable[[Any], T]) -> list[T]:
        value = self.data.get(key)
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return [parse(item) for item in value]


def decode(payload: bytes | str, what: str) -> Fields:
    """A JSON object from raw bytes."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"{what}: {len(payload)} bytes is more than any Messenger payload")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ProtocolError(f"{what}: not JSON: {exc}") from None
    return Fields(data, what)


# --- MQTT ---


def _tip(f: Fields | None) -> TipInfo | None:
    if f is None:
        return None
    return TipInfo(amount=f.integer("amount"), currency=f.opt_text("currency"), status=f.opt_text("status"))


def message(data: object) -> Message:
    """A delivered message (MQTT) or a message of the REST API."""
    f = Fields(data, "message")
    return Message(
        id=f.integer("id", 1),
        client_id=f.text("client_id"),
        sender=f.user_id("from"),
        to=f.user_id("to"),
        body=f.text("body"),
        sent_at=f.moment("sent_at"),
        read_at=f.opt_moment("read_at"),
        tip=_tip(f.opt_obj("tip")),
        list_id=f.opt_text("list"),
    )


def delivered_message(payload: bytes) -> Message:
    """A payload of ``users/{uid}/messages``."""
    f = decode(payload, "message")
    if f.data.get("type") != "message":
        raise ProtocolError(f"message: type must be 'message', got {f.data.get('type')!r:.40}")
    return message(f.data)


def event(payload: bytes) -> ServerEvent:
    """A payload of ``users/{uid}/events``."""
    f = decode(payload, "event")
    kind = f.text("type")
    if kind == "ack":
        return Ack(
            client_id=f.text("client_id"),
            id=f.opt_integer("id", 1),
            status=f.text("status"),
            duplicate=f.flag("duplicate", False),
            sent_at=f.opt_moment("sent_at"),
            tip=_tip(f.opt_obj("tip")),
            mass_message=f.opt_integer("mass_message", 1),
        )
    if kind == "error":
        return CommandError(
            client_id=f.opt_text("client_id"),
            code=f.text("code"),
            detail=f.text("detail"),
            retry_after=f.opt_number("retry_after"),
            limit=f.opt_text("limit"),
        )
    if kind == "tip_failed":
        return TipFailed(
            client_id=f.text("client_id"),
            billing_url=f.text("billing_url"),
            reason=f.opt_text("reason"),
            tip=_tip(f.opt_obj("tip")),
        )
    if kind == "read":
        return ReadReceipt(by=f.user_id("by"), up_to=f.integer("up_to"))
    if kind == "typing":
        return Typing(sender=f.user_id("from"))
    if kind == "synced":
        return Synced(
            last_id=f.opt_integer("last_id"),
            more=f.flag("more"),
            client_id=f.opt_text("client_id"),
            named="client_id" in f.data,
        )
    return UnknownEvent(kind, f.data)


def presence(user: str, device: str, payload: bytes, *, retained: bool) -> Presence | None:
    """The state a presence payload carries (``online``/``offline`` as text, any case, or
    ``{"status": ...}``; empty is offline), or None for anything else, which the server ignores too."""
    if len(payload) > 1024:
        return None
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return None
        status = data.get("status") if isinstance(data, dict) else None
        text = status.strip() if isinstance(status, str) else "?"
    state = {"": False, "online": True, "offline": False}.get(text.lower())
    return None if state is None else Presence(user, device, state, retained)


# --- REST ---


def message_page(data: object) -> Page[Message]:
    f = Fields(data, "message page")
    return Page(f.items("messages", message), f.opt_integer("next_before"), f.opt_integer("next_after"))


def read_marks(data: object) -> list[ReadMark]:
    def mark(item: object) -> ReadMark:
        m = Fields(item, "read mark")
        return ReadMark(m.user_id("from"), m.integer("up_to"))

    return Fields(data, "read answer").items("read", mark)


def conversation_page(data: object) -> Page[Conversation]:
    def conversation(item: object) -> Conversation:
        c = Fields(item, "conversation")
        return Conversation(c.user_id("peer"), message(c.data.get("last_message")), c.integer("unread"))

    f = Fields(data, "conversation page")
    return Page(f.items("conversations", conversation), f.opt_integer("next_before"))


def block(data: object) -> Block:
    f = Fields(data, "block")
    return Block(f.user_id("user"), f.moment("created_at"))


def block_page(data: object) -> NamePage[Block]:
    f = Fields(data, "block page")
    return NamePage(f.items("blocks", block), f.opt_text("next_after"))


def presence_info(data: object) -> PresenceInfo:
    def device(item: object) -> Device:
        d = Fields(item, "device")
        return Device(d.text("device"), d.text("node"), d.moment("since"))

    f = Fields(data, "presence")
    return PresenceInfo(
        user=f.user_id("user"),
        online=f.flag("online"),
        devices=f.items("devices", device),
        since=f.opt_moment("since"),
        last_seen=f.opt_moment("last_seen"),
    )


def presence_list(data: object) -> list[PresenceInfo]:
    return Fields(data, "presence list").items("presence", presence_info)


def tip_record(data: object) -> TipRecord:
    f = Fields(data, "tip")
    return TipRecord(
        id=f.integer("id", 1),
        client_id=f.text("client_id"),
        sender=f.user_id("from"),
        to=f.user_id("to"),
        amount=f.integer("amount", 1),
        currency=f.text("currency"),
        body=f.text("body"),
        status=f.text("status"),
        reason=f.opt_text("reason"),
        message_id=f.opt_integer("message_id", 1),
        billing_url=f.opt_text("billing_url"),
        created_at=f.moment("created_at"),
    )


def tip_page(data: object) -> Page[TipRecord]:
    f = Fields(data, "tip page")
    return Page(f.items("tips", tip_record), f.opt_integer("next_before"))


def member_list(data: object) -> MemberList:
    f = Fields(data, "list")
    return MemberList(
        f.text("id"), f.text("name"), f.user_id("owner"), f.integer("members"), f.moment("created_at")
    )


def member_list_page(data: object) -> NamePage[MemberList]:
    f = Fields(data, "list page")
    return NamePage(f.items("lists", member_list), f.opt_text("next_after"))


def members_page(data: object) -> NamePage[str]:
    f = Fields(data, "member page")

    def member(item: object) -> str:
        if not isinstance(item, str) or not is_user_id(item):
            raise ProtocolError(f"member page: {item!r:.60} is not a user id")
        return item

    return NamePage(f.items("members", member), f.opt_text("next_after"))


def mass_message(data: object) -> MassMessage:
    f = Fields(data, "mass message")
    return MassMessage(
        id=f.integer("id", 1),
        client_id=f.text("client_id"),
        list_id=f.text("list"),
        body=f.text("body"),
        status=f.text("status"),
        recipients=f.opt_integer("recipients"),
        processed=f.integer("processed"),
        stored=f.integer("stored"),
        skipped=f.integer("skipped"),
        progress=f.opt_number("progress"),
    )


def mass_message_page(data: object) -> Page[MassMessage]:
    f = Fields(data, "mass message page")
    return Page(f.items("mass_messages", mass_message), f.opt_integer("next_before"))


def me(data: object) -> Me:
    f = Fields(data, "me")
    token = f.opt_obj("token")
    return Me(
        user=f.user_id("user"),
        role=f.text("role"),
        display_name=f.opt_text("display_name"),
        created_at=f.opt_moment("created_at"),
        token_expires_at=None if token is None else token.opt_moment("expires_at"),
    )
