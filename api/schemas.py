"""Response models of the REST API (they document the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from acl.principal import USER_ID_PATTERN, is_valid_user_id
from acl.revocation import MAX_JTI_LENGTH
from messenger.constants import MAX_MESSAGE_ID, MAX_PAYLOAD_BYTES
from messenger.models import BlockedUser, MassMessage, MemberList, Message, Tip, TokenRevocation, User
from messenger.presence import PresenceInfo
from messenger.protocol import LINE_TEXT, ClientMsgId, ListId
from messenger.protocol import Body as BodyText


def _user_id(value: str) -> str:
    if not is_valid_user_id(value):
        raise ValueError("'.' and '..' are not user ids")
    return value


UserId = Annotated[str, StringConstraints(pattern=f"^{USER_ID_PATTERN}$"), AfterValidator(_user_id)]
MessageId = Annotated[int, Field(ge=1, le=MAX_MESSAGE_ID)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageTipOut(BaseModel):
    amount: int
    currency: str | None
    status: str | None


class MessageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int = Field(examples=[12346])
    client_id: str = Field(examples=["5f0c1e9e-2b1d-4d6e-9a53-0c1d2e3f4a5b"])
    sender: str = Field(alias="from", examples=["alice"])
    to: str = Field(examples=["bob"])
    body: str = Field(examples=["hi"])
    sent_at: datetime
    read_at: datetime | None
    tip: MessageTipOut | None = None
    list: str | None = None

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        tip = (
            MessageTipOut(amount=m.tip_amount, currency=m.tip_currency, status=m.tip_status)
            if m.tip_amount
            else None
        )
        return cls.model_validate(
            {
                "id": m.id,
                "client_id": m.client_msg_id,
                "from": m.sender_id,
                "to": m.recipient_id,
                "body": m.body,
                "sent_at": m.sent_at,
                "read_at": m.read_at,
                "tip": tip,
                "list": m.list_id,
            }
        )


class MessagePage(BaseModel):
    messages: list[MessageOut]
    next_before: int | None = Field(
        description="Pass as `before` to get the next (older) page; null at the end."
    )
    next_after: int | None = Field(
        default=None,
        description="With `after` paging: pass as `after` for the next (newer) page; null at the end.",
    )


class BlockOut(BaseModel):
    user: str = Field(examples=["bob"])
    created_at: datetime

    @classmethod
    def of(cls, row: BlockedUser) -> BlockOut:
        return cls(user=row.blocked_id, created_at=row.created_at)


class BlockList(BaseModel):
    blocks: list[BlockOut]
    next_after: str | None


class DeviceOut(BaseModel):
    device: str
    node: str
    since: datetime


class PresenceOut(BaseModel):
    user: str
    online: bool
    devices: list[DeviceOut]
    since: datetime | None
    last_seen: datetime | None

    @classmethod
    def of(cls, info: PresenceInfo) -> PresenceOut:
        return cls(
            user=info.user_id,
            online=info.online,
            since=info.since,
            last_seen=info.last_seen,
            devices=[DeviceOut(device=d.device, node=d.node, since=d.since) for d in info.devices],
        )


#: The most users one ``POST /v1/presence/query`` may name (repeats count): bounds its cost.
PRESENCE_QUERY_MAX_USERS: Final = 100


class PresenceQuery(_In):
    users: list[UserId] = Field(
        min_length=1, max_length=PRESENCE_QUERY_MAX_USERS, examples=[["alice", "bob"]]
    )


class PresenceList(BaseModel):
    presence: list[PresenceOut]


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
#: Every text field a client sends follows the text rule of :mod:`messenger.protocol` (docs/api.md,
#: "Text"): a message body may hold line feed, carriage return and tab; a name or a reason is one
#: line. Lengths of names count characters (as the database columns do); a body counts UTF-8 bytes.
Body = Annotated[
    BodyText,
    Field(
        description=f"Text, at most {MAX_PAYLOAD_BYTES // 1024} KiB once UTF-8 encoded (else 413); no "
        "control characters but line feed, carriage return and tab, no lone surrogates (else 422)."
    ),
]


#: A list name or a display name: one line, 1-128 characters (the columns are VARCHAR(128)).
Name = Annotated[str, StringConstraints(min_length=1, max_length=128), LINE_TEXT]


class SendIn(_In):
    """A 1:1 message (``to``) or a creator's message to one of their lists (``list``).
    ``client_id`` (or the ``Idempotency-Key`` header) makes a retry safe."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"to": "bob", "body": "hi", "client_id": "5f0c1e9e-2b1d"},
                {"list": "3c2f0a9e", "body": "new post", "client_id": "8d1e2f3a"},
            ]
        },
    )

    to: UserId | None = None
    list: ListId | None = None
    body: Body
    client_id: ClientMsgId | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SendIn:
        if (self.to is None) == (self.list is None):
            raise ValueError("give exactly one of 'to' or 'list'")
        return self


class MassMessageOut(BaseModel):
    """A message to a list and its fan-out: one copy per member who has not blocked the sender."""

    id: int
    client_id: str
    list: str
    body: str
    status: Literal["queued", "sending", "sent", "failed", "canceled"]
    recipients: int | None = Field(description="Members in the list (known once counted or done).")
    processed: int = Field(description="Members gone through so far.")
    stored: int = Field(description="Copies stored (and delivered to those online).")
    skipped: int = Field(description="Members given no copy: they blocked the sender (or are the sender).")
    progress: float | None = Field(description="processed / recipients, when the size is known.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, m: MassMessage) -> MassMessageOut:
        progress = None
        if m.status == "sent":
            progress = 1.0
        elif m.recipients:
            progress = round(min(m.processed / m.recipients, 1.0), 4)
        return cls(
            id=m.id,
            client_id=m.client_msg_id,
            list=m.list_id,
            body=m.body,
            status=m.status,  # type: ignore[arg-type]
            recipients=m.recipients,
            processed=m.processed,
            stored=m.stored,
            skipped=m.skipped,
            progress=progress,
            created_at=m.created_at,
            started_at=m.started_at,
            finished_at=m.finished_at,
        )


class MassMessagePage(BaseModel):
    mass_messages: list[MassMessageOut]
    next_before: int | None


class ListIn(_In):
    name: Name = Field(examples=["VIP"])


class ListOut(BaseModel):
    id: str
    name: str
    owner: str
    members: int
    created_at: datetime

    @classmethod
    def of(cls, row: MemberList, members: int) -> ListOut:
        return cls(id=row.id, name=row.name, owner=row.owner_id, members=members, created_at=row.created_at)


class ListPage(BaseModel):
    lists: list[ListOut]
    next_after: str | None


class MembersIn(_In):
    members: list[UserId] = Field(min_length=1, max_length=1000, examples=[["bob", "carol"]])


class MembersAdded(BaseModel):
    added: int = Field(description="Members that were not in the list yet.")
    members: int = Field(description="Members in the list now.")


class MemberPageOut(BaseModel):
    members: list[str]
    next_after: str | None


class TipIn(_In):
    """A tip to a creator, in minor units, with an optional message."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"to": "creator1", "amount": 500, "currency": "USD", "body": "thanks!"}]
        },
    )

    to: UserId
    amount: Annotated[int, Field(gt=0, le=MAX_MESSAGE_ID)]
    currency: Currency
    body: Body = ""
    client_id: ClientMsgId | None = None


class TipOut(BaseModel):
    id: int
    client_id: str
    sender: str = Field(alias="from")
    to: str
    amount: int
    currency: str
    body: str
    status: Literal["pending", "succeeded", "failed"]
    reason: str | None
    message_id: int | None = Field(description="The message delivered with the tip, once it succeeded.")
    billing_url: str | None = Field(default=None, description="Where to fix billing, when it failed.")
    created_at: datetime
    settled_at: datetime | None

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, t: Tip, billing_url: str | None = None) -> TipOut:
        return cls.model_validate(
            {
                "id": t.id,
                "client_id": t.client_msg_id,
                "from": t.payer_id,
                "to": t.payee_id,
                "amount": t.amount,
                "currency": t.currency,
                "body": t.body,
                "status": t.status,
                "reason": t.reason,
                "message_id": t.message_id,
                "billing_url": billing_url if t.status == "failed" else None,
                "created_at": t.created_at,
                "settled_at": t.settled_at,
            }
        )


class TipPage(BaseModel):
    tips: list[TipOut]
    next_before: int | None


class TopUpIn(_In):
    amount: Annotated[int, Field(gt=0, le=10**15)] = Field(description="Minor units to add.")
    currency: Currency


class BalancesOut(BaseModel):
    user: str
    balances: dict[str, int] = Field(examples=[{"USD": 2500}])


class ReadIn(_In):
    """Either ``up_to`` (every message up to that id, optionally only ``with`` one peer) or ``ids``."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra={"examples": [{"up_to": 12346}]}
    )

    up_to: Annotated[int, Field(ge=0, le=MAX_MESSAGE_ID)] | None = None
    peer: UserId | None = Field(default=None, alias="with")
    ids: list[MessageId] | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one_of(self) -> ReadIn:
        if (self.up_to is None) == (self.ids is None):
            raise ValueError("give exactly one of 'up_to' or 'ids'")
        return self


class ReadMark(BaseModel):
    sender: str = Field(alias="from")
    up_to: int

    model_config = ConfigDict(populate_by_name=True)


class ReadOut(BaseModel):
    read: list[ReadMark] = Field(description="Per sender whose messages were marked, the highest id marked.")


class ConversationOut(BaseModel):
    peer: str
    last_message: MessageOut
    unread: int


class ConversationPage(BaseModel):
    conversations: list[ConversationOut]
    next_before: int | None = Field(description="Pass as `before` for the next page; null at the end.")


class TokenOut(BaseModel):
    jti: str | None
    issued_at: datetime | None
    expires_at: datetime | None


class MeOut(BaseModel):
    user: str
    role: str
    display_name: str | None
    created_at: datetime | None = Field(description="Null until the user is provisioned.")
    token: TokenOut


class UserIn(_In):
    role: Literal["member", "creator", "service"]
    display_name: Name | None = None


class UserOut(BaseModel):
    user: str
    role: str
    display_name: str | None
    created_at: datetime

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(user=u.id, role=u.role, display_name=u.display_name, created_at=u.created_at)


class RevocationIn(_In):
    """Revoke one token by ``jti``, or every token of ``user`` issued before ``before`` (default: now)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user": "alice"}, {"jti": "0b3c9e"}]}
    )

    jti: Annotated[str, StringConstraints(min_length=1, max_length=MAX_JTI_LENGTH), LINE_TEXT] | None = None
    user: UserId | None = None
    before: datetime | None = None
    reason: Annotated[str, StringConstraints(max_length=256), LINE_TEXT] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RevocationIn:
        if (self.jti is None) == (self.user is None):
            raise ValueError("give exactly one of 'jti' or 'user'")
        if self.before is not None and (self.user is None or self.before.utcoffset() is None):
            raise ValueError("'before' goes with 'user' and needs a time zone")
        return self


class RevocationOut(BaseModel):
    id: int
    jti: str | None
    user: str | None
    issued_before: datetime | None
    reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, r: TokenRevocation) -> RevocationOut:
        return cls(
            id=r.id,
            jti=r.jti,
            user=r.user_id,
            issued_before=r.issued_before,
            reason=r.reason,
            created_at=r.created_at,
        )


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(examples=[{"database": "ok", "broker": "ok", "presence": "ok"}])


class ErrorOut(BaseModel):
    code: str = Field(examples=["unauthorized"])
    detail: str


class _GatewayIn(BaseModel):
    """What a broker sends; unknown fields are ignored (each broker adds its own)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    username: str | None = Field(default=None, max_length=256)
    clientid: str | None = Field(
        default=None,
        max_length=256,
        validation_alias=AliasChoices("clientid", "client_id"),
        description="The MQTT client id (`clientid` or `client_id`).",
    )


class GatewayUserIn(_GatewayIn):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"username": "alice", "password": "<bearer token>", "clientid": "alice/phone-1"}]
        }
    )

    password: str | None = Field(default=None, max_length=16 * 1024, description="The bearer token.")


class GatewayAclIn(_GatewayIn):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"username": "alice", "clientid": "alice/phone-1", "topic": "inbound/alice", "acc": 2},
                {
                    "username": "alice",
                    "client_id": "alice/web",
                    "topic": "presence/+/+",
                    "action": "subscribe",
                },
            ]
        }
    )

    topic: str | None = Field(default=None, max_length=65_535)
    acc: int | None = Field(
        default=None, description="mosquitto-go-auth access: 1 read, 2 write, 3 read and write, 4 subscribe."
    )
    action: str | None = Field(default=None, max_length=32, description="EMQX: `publish` or `subscribe`.")
    retain: bool = False


class GatewayOut(BaseModel):
    """The answer mosquitto-go-auth (json mode), EMQX's HTTP authn/authz and the project's
    Mosquitto plugin read. Always HTTP 200: the decision is in the body."""

    ok: bool
    result: Literal["allow", "deny"]
    is_superuser: bool = False
    reason: str | None = Field(default=None, description="Why it was denied.")
    user: str | None = None
    role: str | None = None
    jti: str | None = None
    iat: int | None = Field(default=None, description="When the token was issued (Unix time).")
    expire_at: int | None = Field(default=None, description="When the token expires (Unix time).")

    @classmethod
    def allow(cls, **fields: object) -> GatewayOut:
        return cls.model_validate({"ok": True, "result": "allow", **fields})

    @classmethod
    def deny(cls, reason: str) -> GatewayOut:
        return cls(ok=False, result="deny", reason=reason)
