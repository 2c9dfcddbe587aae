"""Smoke test of the stack fixture: one message from alice reaches bob."""

from __future__ import annotations

import json
import queue
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Stack, token


def connect(stack: Stack, user: str, device: str = "t") -> tuple[mqtt.Client, queue.Queue[tuple[str, dict[str, object]]]]:
    inbox: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}/{device}")
    client.username_pw_set(user, token(user))
    client.on_message = lambda _c, _u, m: inbox.put((m.topic, json.loads(m.payload)))
    client.connect("127.0.0.1", stack.mqtt_port)
    client.loop_start()
    client.subscribe([(f"users/{user}/messages", 1), (f"users/{user}/events", 1)])[1]
    return client, inbox


def test_alice_to_bob(stack: Stack) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    a, a_inbox = connect(stack, alice)
    b, b_inbox = connect(stack, bob)
    import time; time.sleep(0.5)
    a.publish(f"inbound/{alice}", json.dumps({"type": "message", "id": "m1", "to": bob, "body": "hi"}), qos=1)
    topic, msg = b_inbox.get(timeout=10)
    assert msg["body"] == "hi"
    topic, ev = a_inbox.get(timeout=10)
    assert ev["type"] == "ack"
    a.disconnect(); b.disconnect(); a.loop_stop(); b.loop_stop()
