"""Response models of the REST API (they document the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from messenger.models import BlockedUser, Message
from messenger.presence import PresenceInfo


class TipOut(BaseModel):
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
    tip: TipOut | None = None
    list: str | None = None

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        tip = (
            TipOut(amount=m.tip_amount, currency=m.tip_currency, status=m.tip_status)
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


class Health(BaseModel):
    status: str = "ok"


class ErrorOut(BaseModel):
    code: str = Field(examples=["unauthorized"])
    detail: str
