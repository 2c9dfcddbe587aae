"""amqtt plugin: token authentication and the SPEC topic rules, by way of :mod:`acl`.

amqtt 0.12 leaves a Last Will unchecked; this plugin refuses at CONNECT any Will outside the
client's own presence topic, or over the payload limit of :mod:`acl.limits` (Mosquitto, which
cannot see the Will at CONNECT, drops such a Will when it would go out). Retention outside
presence is refused by :class:`broker.server.MessengerBroker`, since amqtt does not show the
retain flag to plugins.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.contexts import BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from acl.connect import authorize_connect
from acl.limits import payload_allowed
from acl.principal import Principal
from acl.tokens import TokenVerifier
from acl.topics import Action, check

logger = logging.getLogger(__name__)

#: Called after the token checks with the principal; raises PermissionError to refuse the
#: CONNECT (e.g. a revoked token). ``messenger serve`` also provisions the user here.
OnAuthenticated = Callable[[Principal], Awaitable[None] | None]

_ACTIONS = {
    AmqttAction.PUBLISH: Action.PUBLISH,
    AmqttAction.SUBSCRIBE: Action.SUBSCRIBE,
    AmqttAction.RECEIVE: Action.RECEIVE,
}


class MessengerAclPlugin(BaseAuthPlugin, BaseTopicPlugin):
    """Authenticates CONNECT with a bearer token and filters every topic through :mod:`acl`."""

    @dataclass
    class Config:
        verifier: Any = None
        on_authenticated: Any = None

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        if not isinstance(self.config.verifier, TokenVerifier):
            raise TypeError("MessengerAclPlugin needs a TokenVerifier in its 'verifier' option")
        self._verifier: TokenVerifier = self.config.verifier
        self._on_authenticated: OnAuthenticated | None = self.config.on_authenticated
        # Principals of authenticated clients, by client id (a client id belongs to one user).
        self._principals: dict[str, Principal] = {}

    async def authenticate(self, *, session: Session) -> bool | None:
        try:
            principal = authorize_connect(
                self._verifier,
                username=session.username,
                password=session.password,
                client_id=session.client_id,
                will_topic=session.will_topic if session.will_flag else None,
                will_retain=bool(session.will_retain),
            )
            if session.will_flag and not payload_allowed(
                str(session.will_topic), len(session.will_message or b""), retain=bool(session.will_retain)
            ):
                raise PermissionError("the Last Will's payload is over the presence limit")
        except PermissionError as exc:
            logger.info(
                "refused CONNECT of client %r from %s: %s", session.client_id, session.remote_address, exc
            )
            return False
        if self._on_authenticated is not None:
            try:
                result = self._on_authenticated(principal)
                if inspect.isawaitable(result):
                    await result
            except PermissionError as exc:
                logger.info("refused CONNECT of client %r: %s", session.client_id, exc)
                return False
            except Exception:
                logger.exception("could not admit user %s; refusing CONNECT", principal.user_id)
                return False
        self._principals[str(session.client_id)] = principal
        return True

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: AmqttAction | None = None
    ) -> bool:
        return self.allows(session, topic, action)

    def principal(self, client_id: str) -> Principal | None:
        """Who authenticated with ``client_id`` last."""
        return self._principals.get(client_id)

    def allows(self, session: Session | None, topic: str | None, action: AmqttAction | None) -> bool:
        """The topic decision, synchronously (the broker calls this on its hot path)."""
        if session is None or topic is None or action is None or session.client_id is None:
            return False
        principal = self._principals.get(session.client_id)
        if principal is None:
            return False
        return check(principal, _ACTIONS[action], topic)
