"""paho-mqtt clients for the service account (the handler and the bridge)."""

from __future__ import annotations

import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


def service_client(
    *,
    user: str,
    token: str,
    name: str,
    clean_session: bool = True,
    manual_ack: bool = False,
    max_inflight: int = 1000,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
) -> mqtt.Client:
    """A paho client logged in as the service account, with client id ``{user}/{name}``.

    Many QoS 1 messages may be in flight at once, and nothing is dropped while the broker is
    away: paho queues publishes until it reconnects.
    """
    client_id = f"{user}/{name}" if name else f"{user}/{uuid.uuid4().hex[:12]}"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session if protocol != MQTTProtocolVersion.MQTTv5 else None,
        protocol=protocol,
        manual_ack=manual_ack,
    )
    client.username_pw_set(user, token)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client
