"""Messages/s and latency through a running Messenger (``messenger serve`` or the production stack).

Senders publish ``message`` commands (QoS 1, many in flight) to ``inbound/{uid}``; receivers
count every message on ``users/{uid}/messages`` by its client id. The figure is end to end:
validated, stored, committed and delivered.

    python bench/throughput.py --messages 5000              # spawns `messenger serve` on a temp SQLite
    python bench/throughput.py --database-url mysql+pymysql://root@127.0.0.1/test
    python bench/throughput.py --port 1884 --no-spawn       # against a serve you started yourself
    python bench/throughput.py --rate 300                   # offered at a fixed rate: latency at that rate
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acl.tokens import issue_token
from messenger.constants import DEV_SECRET
from messenger.db import create_db_engine
from messenger.models import Message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(user: str, port: int, secret: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}/bench-{uuid.uuid4().hex[:6]}")
    c.username_pw_set(user, issue_token(secret, user))
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=4, help="sender/receiver pairs")
    parser.add_argument("--port", type=int, help="MQTT port of a running stack (with --no-spawn)")
    parser.add_argument("--no-spawn", action="store_true")
    parser.add_argument("--database-url", help="database for the spawned serve (default: a temp SQLite file)")
    parser.add_argument("--redis-url")
    parser.add_argument("--secret", default=os.environ.get("MESSENGER_DEV_SECRET", DEV_SECRET))
    parser.add_argument(
        "--rate", type=float, default=0, help="total messages/s to offer (0: as fast as possible)"
    )
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--verbose", action="store_true", help="show the spawned server's output")
    args = parser.parse_args()

    proc = None
    tmp = tempfile.mkdtemp(prefix="messenger-bench-")
    database_url = args.database_url or (None if args.no_spawn else f"sqlite:///{tmp}/bench.db")
    port = args.port or free_port()
    if not args.no_spawn:
        # a few senders send thousands of messages: the per-user send limit would refuse most
        env = dict(os.environ, MESSENGER_LOG_LEVEL="WARNING", MESSENGER_SEND_RATE_PER_S="0")
        cmd = [
            sys.executable,
            "-m",
            "messenger.cli",
            "serve",
            "--mqtt-port",
            str(port),
            "--ws-port",
            str(free_port()),
            "--api-port",
            str(free_port()),
            "--database-url",
            str(database_url),
        ]
        if args.redis_url:
            cmd += ["--redis-url", args.redis_url]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if not args.verbose else None)
    try:
        wait_port(port)
        run = uuid.uuid4().hex[:6]
        pairs = [(f"bs{i}-{run}", f"br{i}-{run}") for i in range(args.pairs)]
        received: dict[str, float] = {}
        latencies: list[float] = []
        lock = threading.Lock()
        done = threading.Event()
        total = args.messages - args.messages % args.pairs

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            data = json.loads(msg.payload)
            now = time.perf_counter()
            with lock:
                if data["client_id"] not in received:
                    received[data["client_id"]] = now
                    latencies.append(now - float(data["body"]))
                    if len(received) >= total:
                        done.set()

        errors: list[dict[str, object]] = []

        def on_event(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            event = json.loads(msg.payload)
            if event.get("type") == "error":
                with lock:
                    errors.append(event)

        subscribed = threading.Semaphore(0)
        receivers = []
        senders = []
        for sender, receiver in pairs:
            s = client(sender, port, args.secret)  # connecting creates the sender's user
            s.on_message = on_event
            s.on_subscribe = lambda *_a: subscribed.release()
            s.subscribe(f"users/{sender}/events", qos=1)
            senders.append(s)
            r = client(receiver, port, args.secret)
            r.on_message = on_message
            r.on_subscribe = lambda *_a: subscribed.release()
            r.subscribe(f"users/{receiver}/messages", qos=1)
            receivers.append(r)
        for _ in receivers + senders:
            subscribed.acquire(timeout=10)
        time.sleep(0.5)

        per_pair = total // args.pairs
        start = time.perf_counter()

        def send(index: int) -> None:
            sender, receiver = pairs[index]
            c = senders[index]
            interval = args.pairs / args.rate if args.rate else 0.0
            for n in range(per_pair):
                if interval:
                    delay = start + n * interval - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                body = repr(time.perf_counter())
                cmd = {"type": "message", "id": f"{run}-{index}-{n}", "to": receiver, "body": body}
                c.publish(f"inbound/{sender}", json.dumps(cmd), qos=1)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(args.pairs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent_s = time.perf_counter() - start
        finished = done.wait(args.timeout)
        if not finished:
            unsent = sum(len(c._out_messages) for c in senders)
            print(f"still queued or unacked at the senders: {unsent}")
        elapsed = (max(received.values()) if received else time.perf_counter()) - start
        for c in senders + receivers:
            c.disconnect()
            c.loop_stop()
        lat = sorted(latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

        offered = f"offered at {args.rate:,.0f}/s" if args.rate else "as fast as possible"
        print(f"messages sent       {total} ({args.pairs} sender/receiver pairs, QoS 1, {offered})")
        print(f"publish finished    {sent_s:.2f} s")
        print(f"delivered           {len(received)}/{total}{'' if finished else '  (TIMED OUT)'}")
        rate = len(received) / elapsed
        print(f"end-to-end          {elapsed:.2f} s  ->  {rate:,.0f} messages/s stored+delivered")
        if lat:
            print(
                f"latency ms          p50 {pct(0.5):.1f}  p99 {pct(0.99):.1f}  max {lat[-1] * 1000:.1f}"
                f"  mean {statistics.mean(lat) * 1000:.1f}"
            )
        if errors:
            print(f"error events        {len(errors)}, e.g. {errors[0]}")
        if database_url:
            engine = create_db_engine(database_url)
            with engine.connect() as conn:
                stored = conn.execute(
                    select(func.count()).select_from(Message).where(Message.client_msg_id.like(f"{run}-%"))
                ).scalar_one()
            engine.dispose()
            print(f"stored in database  {stored}/{total}")
        if not finished:
            raise SystemExit(1)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
