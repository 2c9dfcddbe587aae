"""messenger_client: the Python client library of Messenger (docs/clients.md).

``async with Client(user, get_token) as chat:`` connects over MQTT, catches up on every
(re)connection, and yields each message once, in id order, from ``chat.events()``;
``chat.send(...)`` retries with the same client id until the server answers; ``chat.rest`` is
the REST API.
"""

from .backoff import Backoff
from .catchup import CatchUp
from .client import Client
from .events import (
    Ack,
    CaughtUp,
    CommandError,
    Connected,
    Disconnected,
    Event,
    Message,
    Presence,
    ReadReceipt,
    SendTimedOut,
    TipFailed,
    TipInfo,
    Typing,
    UnknownEvent,
)
from .exceptions import (
    ApiError,
    AuthError,
    ClosedError,
    ConnectError,
    MessengerError,
    ProtocolError,
    RateLimitedError,
    SendError,
    TipFailedError,
    TransportError,
)
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
from .outbox import Outgoing, SendState
from .rest import RestClient
from .tokens import TokenProvider, TokenSource, token_expiry

__all__ = [
    "Ack",
    "ApiError",
    "AuthError",
    "Backoff",
    "Block",
    "CatchUp",
    "CaughtUp",
    "Client",
    "ClosedError",
    "CommandError",
    "ConnectError",
    "Connected",
    "Conversation",
    "Device",
    "Disconnected",
    "Event",
    "MassMessage",
    "Me",
    "MemberList",
    "Message",
    "MessengerError",
    "NamePage",
    "Outgoing",
    "Page",
    "Presence",
    "PresenceInfo",
    "ProtocolError",
    "RateLimitedError",
    "ReadMark",
    "ReadReceipt",
    "RestClient",
    "SendError",
    "SendState",
    "SendTimedOut",
    "TipFailed",
    "TipFailedError",
    "TipInfo",
    "TipRecord",
    "TokenProvider",
    "TokenSource",
    "TransportError",
    "Typing",
    "UnknownEvent",
    "token_expiry",
]
