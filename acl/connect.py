"""The CONNECT check every broker integration makes: token, username, client id, Last Will.

The embedded broker's plugin calls it in-process; the gateway endpoint ``POST /mqtt/user``
calls it for Mosquitto (and EMQX or mosquitto-go-auth).
"""

from __future__ import annotations

from acl.exceptions import InvalidToken
from acl.principal import Principal
from acl.tokens import TokenVerifier
from acl.topics import can_set_will, client_id_allowed


def authorize_connect(
    verifier: TokenVerifier,
    *,
    username: str | None,
    password: str | None,
    client_id: str | None,
    will_topic: str | None = None,
    will_retain: bool = False,
) -> Principal:
    """Check one CONNECT: token, username, client id prefix and Last Will. Raises PermissionError."""
    if not password:
        raise PermissionError("no token in the password field")
    try:
        principal = verifier.verify(password)
    except InvalidToken as exc:
        raise PermissionError(f"invalid token ({exc.reason})") from exc
    if username != principal.user_id:
        raise PermissionError(f"username {username!r} is not the token subject")
    if client_id is None or not client_id_allowed(principal, client_id):
        raise PermissionError(f"client id {client_id!r} must start with {principal.user_id + '/'!r}")
    if will_topic is not None and not can_set_will(principal, will_topic, retain=will_retain):
        raise PermissionError(f"Last Will on {will_topic!r} is not the client's own presence topic")
    return principal
