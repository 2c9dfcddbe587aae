"""A tiny terminal chat over Messenger's MQTT protocol (docs/protocol.md).

    python examples/chat.py --user alice --to bob [--host 127.0.0.1 --port 1884] [--token T]

Each line you type is sent to ``--to`` as a message; incoming messages and events are printed.
The token comes from ``--token``, else ``$MESSENGER_TOKEN``, else ``messenger token issue USER``
(the development secret, as ``messenger serve`` uses by default). Needs paho-mqtt 2.x, which
Messenger installs. Ctrl-D or Ctrl-C quits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

ACK_WAIT_S = 10.0


def issue_dev_token(user: str) -> str:
    """Ask the installed ``messenger`` command for a development token."""
    command = shutil.which("messenger") or str(Path(sys.executable).with_name("messenger"))
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command, the user id is validated by it
            [command, "token", "issue", user], check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        sys.exit(f"chat: no --token or MESSENGER_TOKEN, and `messenger token issue {user}` failed: {detail}")
    return done.stdout.strip()


class Chat:
    """One device of ``user`` talking to ``peer``."""

    def __init__(self, user: str, peer: str, token: str) -> None:
        self.user, self.peer = user, peer
        # Client ids must start with "{user}/"; the device name doubles as the presence topic level.
        self.device = f"chat-{uuid.uuid4().hex[:8]}"
        self.presence_topic = f"presence/{user}/{self.device}"
        self.my_topics = {f"users/{user}/messages", f"users/{user}/events"}
        self.ready = threading.Event()
        self.failed: str | None = None
        self._pending: set[str] = set()  # client ids sent and not yet acked (or refused)
        self._settled = threading.Condition()

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}/{self.device}")
        self.client.username_pw_set(user, token)
        # If this connection drops without a DISCONNECT, the broker announces us offline.
        self.client.will_set(self.presence_topic, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # network thread

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None) -> None:
        if reason.is_failure:
            self.failed = f"the broker refused the connection: {reason}"
            self.ready.set()
            return
        client.subscribe([(topic, 1) for topic in sorted(self.my_topics)])

    def _on_subscribe(
        self, client: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any = None
    ) -> None:
        if any(r.is_failure for r in reasons):
            self.failed = f"the broker refused a subscription: {reasons}"
        else:
            # Announce presence only once subscribed: going online makes the server push what we
            # missed, and it must find our subscriptions in place.
            client.publish(self.presence_topic, "online", qos=1, retain=True)
        self.ready.set()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic not in self.my_topics:
            return  # the embedded broker may replay retained presence we did not ask for
        try:
            data = json.loads(msg.payload)
        except ValueError:
            print(f"?? {msg.topic}: {msg.payload!r}", flush=True)
            return
        kind = data.get("type")
        if kind == "message":
            print(f"[{data['id']}] {data['from']}: {data['body']}", flush=True)
            if data["to"] == self.user:
                read = {"type": "read", "up_to": data["id"], "with": data["from"]}
                client.publish(f"inbound/{self.user}", json.dumps(read), qos=1)
        elif kind == "ack":
            note = " (again)" if data.get("duplicate") else ""
            print(f"  sent #{data['id']}{note}", flush=True)
            self._settle(data.get("client_id"))
        elif kind == "error":
            print(f"  ! {data['code']}: {data['detail']}", flush=True)
            self._settle(data.get("client_id"))
        elif kind == "read":
            print(f"  {data['by']} read up to #{data['up_to']}", flush=True)
        elif kind == "typing":
            print(f"  {data['from']} is typing...", flush=True)
        elif kind == "synced" and data.get("more"):
            print("  (more unread messages: fetch them with GET /v1/messages)", flush=True)

    def _settle(self, client_id: str | None) -> None:
        with self._settled:
            self._pending.discard(client_id or "")
            self._settled.notify_all()

    # main thread

    def send(self, body: str) -> None:
        client_id = str(uuid.uuid4())
        with self._settled:
            self._pending.add(client_id)
        command = {"type": "message", "id": client_id, "to": self.peer, "body": body}
        self.client.publish(f"inbound/{self.user}", json.dumps(command), qos=1)

    def wait_for_acks(self, timeout: float) -> bool:
        with self._settled:
            return self._settled.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        # A clean DISCONNECT discards the Will, so say goodbye ourselves. An empty retained
        # payload means offline and also clears this device's retained state from the broker.
        self.client.publish(self.presence_topic, b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Terminal chat over Messenger's MQTT protocol.")
    parser.add_argument("--user", required=True, help="who you are (the token's subject)")
    parser.add_argument("--to", required=True, help="who you talk to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1884)
    parser.add_argument("--token", help="bearer token (default: $MESSENGER_TOKEN, else a dev token)")
    args = parser.parse_args()

    token = args.token or os.environ.get("MESSENGER_TOKEN") or issue_dev_token(args.user)
    chat = Chat(args.user, args.to, token)
    try:
        chat.client.connect(args.host, args.port, keepalive=30)
    except OSError as exc:
        print(f"chat: cannot reach {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    chat.client.loop_start()
    if not chat.ready.wait(10) or chat.failed:
        print(f"chat: {chat.failed or 'no answer from the broker'}", file=sys.stderr)
        chat.client.loop_stop()
        return 1
    print(
        f"{args.user} -> {args.to} on {args.host}:{args.port} (device {chat.device}); Ctrl-D quits",
        flush=True,
    )
    try:
        for line in sys.stdin:
            if line.strip():
                chat.send(line.rstrip("\n"))
    except KeyboardInterrupt:
        pass
    if not chat.wait_for_acks(ACK_WAIT_S):
        print("chat: some messages were not acknowledged yet", file=sys.stderr)
    chat.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
