"""Names shared by every process: Redis key prefixes, limits, defaults.

MQTT topic templates live in :mod:`acl.topics`, the single source of truth for the topic rules.
"""

from __future__ import annotations

from typing import Final

from acl.limits import MAX_COMMAND_BYTES

#: Development HS256 secret. The settings refuse it outside ``environment=development``.
DEV_SECRET: Final = "messenger-development-secret-do-not-use-in-production"  # noqa: S105 - a documented dev default

#: Largest inbound command accepted, in bytes (SPEC section 4); the brokers' limits are in
#: :mod:`acl.limits`, with this one.
MAX_PAYLOAD_BYTES: Final = MAX_COMMAND_BYTES

#: Largest message id (BIGINT); larger ids in requests are refused, not overflowed.
MAX_MESSAGE_ID: Final = 2**63 - 1

#: Redis keys of the presence store.
REDIS_PREFIX: Final = "messenger:"
PRESENCE_DEVICES_KEY: Final = REDIS_PREFIX + "presence:{uid}:devices"  # hash device -> JSON state
PRESENCE_LAST_SEEN_KEY: Final = REDIS_PREFIX + "presence:{uid}:last_seen"
PRESENCE_NODE_KEY: Final = REDIS_PREFIX + "presence-node:{node}"  # set of "uid/device" a node recorded
RATE_LIMIT_KEY: Final = REDIS_PREFIX + "ratelimit:{action}:{key}"  # hash tokens, at (ms)
HANDLERS_KEY: Final = REDIS_PREFIX + "handlers"  # sorted set: handler name -> last heartbeat (ms)
HANDLER_TAKEOVER_KEY: Final = REDIS_PREFIX + "handler-takeover:{name}"  # the taker's name, leased

#: Default listeners of ``messenger serve``: loopback only, off the usual 1883 so a system
#: Mosquitto can keep its port.
DEFAULT_BIND_HOST: Final = "127.0.0.1"
DEFAULT_MQTT_PORT: Final = 1884
DEFAULT_WS_PORT: Final = 8083
DEFAULT_API_PORT: Final = 8080

#: Service account used by the handler and the bridge when they connect to the broker.
DEFAULT_SERVICE_USER: Final = "messenger-service"
