"""``messenger bridge``: mirrors one broker node's presence into Redis.

Run one per broker node, with ``MESSENGER_NODE_ID`` naming that node: at start it marks the
devices it recorded for the node offline (a restarted broker sends no Last Wills), then the
retained presence the broker replays marks the live ones online again.
"""

from __future__ import annotations

import logging

from bridge.bridge import PresenceBridge
from launch.process import require_redis, wait_for_stop_signal
from messenger.exceptions import ConfigurationError
from messenger.mqtt import service_client
from messenger.presence import RedisPresenceStore
from messenger.settings import ServiceClientSettings

logger = logging.getLogger(__name__)


def run(settings: ServiceClientSettings) -> int:
    try:
        token = settings.resolve_service_token()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    store = RedisPresenceStore(require_redis(settings.redis_url, "bridge"))
    client = service_client(
        user=settings.service_user, token=token, name=f"bridge-{settings.node_id}", manual_ack=True
    )
    bridge = PresenceBridge(client, store, node_id=settings.node_id)
    logger.info(
        "presence bridge of node %s starting: broker %s:%d",
        settings.node_id,
        settings.mqtt_host,
        settings.mqtt_port,
    )
    bridge.start(settings.mqtt_host, settings.mqtt_port, wait_s=None)
    try:
        wait_for_stop_signal()
    finally:
        bridge.stop()
        store.close()
    return 0
