"""The MQTT protocol v1 (SPEC section 4): inbound commands and the payloads the handler publishes.

Parsing is strict and never raises anything but :class:`InvalidCommand`, whose ``code`` is one
of :data:`ERROR_CODES`.

Text a client sends is checked here for both doors (the REST schemas use the same types):
:data:`Body` for a message body or a tip's message, :data:`TextLine` for one line of text
(names, reasons), :data:`ClientMsgId` and :data:`ListId` for printable-ASCII ids.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from acl.principal import USER_ID_PATTERN
from messenger.constants import MAX_MESSAGE_ID, MAX_PAYLOAD_BYTES
from messenger.exceptions import InvalidCommand
from messenger.models import Message

#: Stable error codes sent in ``error`` events.
ERROR_CODES: Final = frozenset(
    {
        "payload_too_large",
        "invalid_json",
        "invalid_payload",
        "unknown_type",
        "unknown_recipient",
        "invalid_recipient",
        "unknown_sender",
        "not_supported",
        "rate_limited",
        "idempotency_conflict",
        "not_a_creator",
        "list_not_owned",
        "invalid_tip",
        "tip_refused",
        "service_unavailable",
        "mass_message_failed",
        "internal_error",
    }
)

#: The text rule (docs/protocol.md, "Text"). Every text field a client sends is Unicode text: a
#: lone surrogate (``"\ud800"`` in JSON) has no UTF-8 form, so it could be neither stored nor
#: delivered. Control characters are refused too (C0, DEL and C1: invisible, they spoof and
#: corrupt what is shown, and SQLite cut a body at its first NUL), except that a message body
#: keeps line feed, carriage return (Windows line ends) and tab. Everything else is text as sent:
#: format characters (ZWJ, bidi marks), combining marks, noncharacters, astral-plane characters.
_NOT_LINE_TEXT: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_BODY_TEXT: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why ``value`` is not acceptable client text (None when it is): one line of text, or with
    ``multiline`` a message body (line feed, carriage return and tab allowed)."""
    found = (_NOT_BODY_TEXT if multiline else _NOT_LINE_TEXT).search(value)
    if found is None:
        return None
    char, where = found.group(), found.start()
    if _SURROGATE.match(char):
        return _surrogate_problem(char, where)
    allowed = " (only line feed, carriage return and tab are)" if multiline else ""
    return f"control character U+{ord(char):04X} at character {where} is not allowed{allowed}"


def _surrogate_problem(char: str, where: int) -> str:
    return f"a lone surrogate (U+{ord(char):04X}) at character {where} is not Unicode text"


def _checked_text(value: object, multiline: bool) -> object:
    if isinstance(value, str) and (problem := text_problem(value, multiline=multiline)) is not None:
        # a custom error: its message is the problem alone ("Value error, ..." for a ValueError)
        raise PydanticCustomError("invalid_text", "{problem}", {"problem": problem})
    return value


def _body_text(value: object) -> object:
    return _checked_text(value, multiline=True)


def _line_text(value: object) -> object:
    return _checked_text(value, multiline=False)


#: A message body or a tip's message: text under the rule above, newlines allowed. Its size limit
#: counts UTF-8 bytes, like every size limit of the protocol: over MQTT the whole command is at most
#: :data:`MAX_PAYLOAD_BYTES`; over REST the body itself (``413 payload_too_large``).
BODY_TEXT: Final = BeforeValidator(_body_text)
Body = Annotated[str, BODY_TEXT]
#: One line of text (a list name, a display name, a reason): the rule above, no control character
#: at all. With a length limit, put it after the constraints, as pydantic words their errors best
#: then: ``Annotated[str, StringConstraints(max_length=128), LINE_TEXT]``.
LINE_TEXT: Final = BeforeValidator(_line_text)
TextLine = Annotated[str, LINE_TEXT]
UserId = Annotated[str, StringConstraints(pattern=f"^{USER_ID_PATTERN}$")]
#: A client's message id and a list id: 1-64 printable ASCII characters.
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
ListId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]


class _Command(BaseModel):
    # strict: "12" is not a number and true is not 1
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Tip(_Command):
    amount: int = Field(gt=0)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class SendMessage(_Command):
    """``{"type": "message", "id": "<client uuid>", "to": "bob", "body": "hi"}``"""

    type: Literal["message"]
    id: ClientMsgId
    to: UserId | None = None
    list: ListId | None = None
    body: Body
    tip: Tip | None = None


class MarkRead(_Command):
    """``{"type": "read", "up_to": 12345}``; ``with`` limits it to one conversation; an ``id``
    comes back as the ``client_id`` of a refusal."""

    type: Literal["read"]
    id: ClientMsgId | None = None
    up_to: int = Field(ge=0, le=MAX_MESSAGE_ID)
    peer: UserId | None = Field(default=None, alias="with")


class Typing(_Command):
    type: Literal["typing"]
    to: UserId


class Sync(_Command):
    """``{"type": "sync"}`` (unread) or ``{"type": "sync", "after": 12000}``; an ``id`` comes
    back as the ``client_id`` of its ``synced`` event (or of its refusal)."""

    type: Literal["sync"]
    id: ClientMsgId | None = None
    after: int | None = Field(default=None, ge=0, le=MAX_MESSAGE_ID)


Command = Annotated[SendMessage | MarkRead | Typing | Sync, Field(discriminator="type")]
_COMMAND: Final[TypeAdapter[SendMessage | MarkRead | Typing | Sync]] = TypeAdapter(Command)
COMMAND_TYPES: Final = frozenset({"message", "read", "typing", "sync"})
#: How much of a command too large (or too broken) to parse is read for its ``id``: the members
#: that come before the body (type, id, to or list, tip) fit well within it.
CLIENT_ID_SCAN_BYTES: Final = 1024


def parse_command(payload: bytes) -> SendMessage | MarkRead | Typing | Sync:
    """Decode and validate one inbound command."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidCommand(
            f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}", code="payload_too_large"
        )
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
        raise InvalidCommand(f"payload is not UTF-8 JSON: {exc}", code="invalid_json") from exc
    # the one place a lone surrogate can come in (a \ud800 escape; raw UTF-8 cannot carry one):
    # nothing after this line, the error event included, meets text it could not encode
    if (problem := _lone_surrogate(data)) is not None:
        raise InvalidCommand(problem, code="invalid_payload")
    if not isinstance(data, dict):
        raise InvalidCommand("a command is a JSON object", code="invalid_payload")
    # a list or object "type" is unhashable: check it is a string before the set lookup
    if not isinstance(data.get("type"), str) or data["type"] not in COMMAND_TYPES:
        raise InvalidCommand(
            f"unknown command type {data.get('type')!r}; expected one of {sorted(COMMAND_TYPES)}",
            code="unknown_type",
        )
    try:
        command = _COMMAND.validate_python(data)
    except ValidationError as exc:
        raise InvalidCommand(_describe(exc), code="invalid_payload") from exc
    if isinstance(command, SendMessage) and (command.to is None) == (command.list is None):
        raise InvalidCommand("a message has exactly one of 'to' or 'list'", code="invalid_payload")
    if isinstance(command, SendMessage) and command.list is not None and command.tip is not None:
        raise InvalidCommand("a tip goes to one creator ('to'), not to a list", code="invalid_payload")
    return command


def client_id_of(payload: bytes) -> str | None:
    """Best-effort client id of a command that failed validation, to echo in the error event.

    A command over :data:`MAX_PAYLOAD_BYTES`, or one that is not JSON, is never parsed whole:
    its top-level ``id`` is looked for in its first :data:`CLIENT_ID_SCAN_BYTES` bytes only,
    and kept only when it is a valid client id. A parsed ``id`` is cut to 64 characters and kept
    only when that is a valid client id (printable ASCII).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _scanned_client_id(payload)
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _scanned_client_id(payload)
    value = data.get("id") if isinstance(data, dict) else None
    # cut to the longest valid id, then echoed only if it is one: never text the event cannot carry
    return value[:64] if isinstance(value, str) and _CLIENT_ID.fullmatch(value[:64]) else None


def _lone_surrogate(data: object) -> str | None:
    """Where decoded JSON holds a lone surrogate, in a key or a string value, and which (None
    when it holds none): ``"tip.currency: a lone surrogate (U+D800) at character 0 ..."``.
    Iterative: the nesting json.loads allows is deeper than a recursive walk would like."""
    pending: list[tuple[str, object]] = [("payload", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if (found := _SURROGATE.search(value)) is not None:
                return f"{path}: {_surrogate_problem(found.group(), found.start())}"
        elif isinstance(value, dict):
            for key, item in value.items():
                if (found := _SURROGATE.search(key)) is not None:
                    return f"{path}: in a key, {_surrogate_problem(found.group(), found.start())}"
                pending.append((key if path == "payload" else f"{path}.{key}", item))
        elif isinstance(value, list):
            pending.extend((f"{path}.{i}", item) for i, item in enumerate(value))
    return None


#: One JSON token after optional whitespace: a whole string, a structural character, or a bare
#: scalar (number, true, false, null). A string cut by the end of the scanned bytes matches none.
_JSON_TOKEN: Final = re.compile(rb'[ \t\r\n]*("(?:[^"\\\x00-\x1f]|\\.)*"|[{}\[\]:,]|[^ \t\r\n"{}\[\]:,]+)')
#: A valid client id, as :data:`ClientMsgId` has it.
_CLIENT_ID: Final = re.compile(r"[\x21-\x7e]{1,64}")


def _scanned_client_id(payload: bytes) -> str | None:
    """The ``id`` member of the top-level object in the first :data:`CLIENT_ID_SCAN_BYTES` bytes
    of ``payload``, when it is a string that is a valid client id; else None.

    The bytes are split into JSON tokens (each string whole, so that text inside a string is
    never taken for a member) until the scan ends or meets something that is not JSON; ``id``
    counts only as a key of the top-level object, right after its ``{`` or a ``,``.
    """
    scanned = payload[:CLIENT_ID_SCAN_BYTES]
    tokens: list[tuple[int, bytes]] = []  # (nesting depth, token)
    depth, position = 0, 0
    while (match := _JSON_TOKEN.match(scanned, position)) is not None:
        position = match.end()
        token = match.group(1)
        if token in (b"}", b"]"):
            depth -= 1
        tokens.append((depth, token))
        if token in (b"{", b"["):
            depth += 1
        elif depth <= 0:  # the end of the top-level value: nothing after it is the command's
            break
    if not tokens or tokens[0][1] != b"{":
        return None
    for i in range(1, len(tokens) - 2):
        (key_depth, key), (_, colon), (_, value) = tokens[i : i + 3]
        if key_depth == 1 and key == b'"id"' and tokens[i - 1][1] in (b"{", b",") and colon == b":":
            if not value.startswith(b'"'):
                return None
            try:
                client_id = json.loads(value)
            except ValueError:  # a bad escape, or bytes that are not UTF-8
                return None
            return client_id if isinstance(client_id, str) and _CLIENT_ID.fullmatch(client_id) else None
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"][1:]) or "payload"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def format_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_payload(message: Message) -> dict[str, Any]:
    """What ``users/{uid}/messages`` carries for one stored message."""
    tip = None
    if message.tip_amount is not None:
        tip = {"amount": message.tip_amount, "currency": message.tip_currency, "status": message.tip_status}
    return _message(
        message.id,
        message.client_msg_id,
        message.sender_id,
        message.recipient_id,
        message.body,
        message.sent_at,
        message.read_at,
        tip,
        message.list_id,
    )


#: What the template of :func:`copy_payloads` holds in place of the id and the recipient. A
#: string value cannot produce these bytes (its quotes are escaped), only the field itself.
_TO_MARK = "\x00"
_ID_FIELD = b'"id":0,'
_TO_FIELD = b'"to":"\\u0000"'
_encode_str = json.JSONEncoder(ensure_ascii=False).encode


def copy_payloads(
    sender: str, client_id: str, body: str, sent_at: datetime, list_id: str, copies: list[tuple[int, str]]
) -> list[tuple[str, bytes]]:
    """(recipient, payload) of each copy (server id, recipient) of a mass message: what
    :func:`message_payload` gives for the stored copy, built without loading it.

    The copies differ only in their id and recipient: one payload is encoded with markers in
    their place and split there, and each copy joins the pieces around its own id and recipient
    (a page of a thousand copies spent most of its payload time in ``json.dumps``).
    """
    template = encode(_message(0, client_id, sender, _TO_MARK, body, sent_at, None, None, list_id))
    head, id_mark, rest = template.partition(_ID_FIELD)
    middle, to_mark, tail = rest.partition(_TO_FIELD)
    if not (id_mark and to_mark):  # only if _message changed its fields
        return [
            (to, encode(_message(message_id, client_id, sender, to, body, sent_at, None, None, list_id)))
            for message_id, to in copies
        ]
    head, middle = head + b'"id":', b"," + middle + b'"to":'
    return [
        (to, b"".join((head, b"%d" % message_id, middle, _encode_str(to).encode("utf-8"), tail)))
        for message_id, to in copies
    ]


def _message(
    message_id: int,
    client_id: str,
    sender: str,
    to: str,
    body: str,
    sent_at: datetime | None,
    read_at: datetime | None,
    tip: dict[str, Any] | None,
    list_id: str | None,
) -> dict[str, Any]:
    return {
        "type": "message",
        "id": message_id,
        "client_id": client_id,
        "from": sender,
        "to": to,
        "body": body,
        "sent_at": format_time(sent_at),
        "read_at": format_time(read_at),
        "tip": tip,
        "list": list_id,
    }


def ack_event(message: Message, *, duplicate: bool) -> dict[str, Any]:
    return {
        "type": "ack",
        "client_id": message.client_msg_id,
        "id": message.id,
        "status": "sent",
        "duplicate": duplicate,
        "sent_at": format_time(message.sent_at),
    }


def mass_message_ack(client_id: str, mass_message_id: int, status: str, *, duplicate: bool) -> dict[str, Any]:
    """The ``ack`` of a list message: queued for fan-out (``mass_message`` is its id)."""
    return {
        "type": "ack",
        "client_id": client_id,
        "id": None,
        "mass_message": mass_message_id,
        "status": status,
        "duplicate": duplicate,
    }


def tip_ack(
    client_id: str, message: Message | None, amount: int, currency: str, status: str, *, duplicate: bool
) -> dict[str, Any]:
    """The ``ack`` of a tip: ``sent`` with the stored message once the charge succeeded,
    ``pending`` (no message yet) while the charge's outcome is unknown."""
    return {
        "type": "ack",
        "client_id": client_id,
        "id": None if message is None else message.id,
        "status": "sent" if message is not None else "pending",
        "duplicate": duplicate,
        "sent_at": None if message is None else format_time(message.sent_at),
        "tip": {"amount": amount, "currency": currency, "status": status},
    }


def tip_failed_event(
    client_id: str, billing_url: str, reason: str | None, amount: int, currency: str
) -> dict[str, Any]:
    """The charge of a tip failed: nothing was delivered; the member fixes billing at ``billing_url``."""
    return {
        "type": "tip_failed",
        "client_id": client_id,
        "billing_url": billing_url,
        "reason": reason,
        "tip": {"amount": amount, "currency": currency, "status": "failed"},
    }


def error_event(code: str, detail: str, client_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """An ``error`` event; ``extra`` adds fields such as ``retry_after`` (seconds) for ``rate_limited``."""
    return {"type": "error", "client_id": client_id, "code": code, "detail": detail, **extra}


def read_event(by: str, up_to: int) -> dict[str, Any]:
    return {"type": "read", "by": by, "up_to": up_to}


def typing_event(sender: str) -> dict[str, Any]:
    return {"type": "typing", "from": sender}


def synced_event(last_id: int | None, more: bool, client_id: str | None = None) -> dict[str, Any]:
    """The end of a catch-up; ``client_id`` is the ``id`` of the ``sync`` it answers (null for
    the server's own, when a device comes online): every device of the user receives it."""
    return {"type": "synced", "last_id": last_id, "more": more, "client_id": client_id}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_presence(payload: bytes) -> bool | None:
    """Online state carried by a presence message; None when the payload is not a presence state.

    Accepts ``online``/``offline`` as plain text or ``{"status": "online"}``; an empty payload
    (a cleared retained message) means offline.
    """
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        return False
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return None
        text = data.get("status", "") if isinstance(data, dict) else ""
    return {"online": True, "offline": False}.get(text.strip().lower()) if isinstance(text, str) else None
