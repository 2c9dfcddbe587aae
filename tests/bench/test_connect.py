"""``connect``: every CONNECT is counted (accepted, refused, failed), every idle client is held and
its presence found in the store; the scenario reports what it counted, not how fast."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from bench.scenarios.connect import SCENARIO, connect_packet
from bench.stacks import StackOptions, running
from bench.suite import Progress, Result, write_json
from messenger.constants import PRESENCE_DEVICES_KEY, PRESENCE_LAST_SEEN_KEY
from tests.conftest import REDIS_URL


def test_connect_packet_encodes_a_long_remaining_length() -> None:
    token = "t" * 300  # a JWT is a few hundred bytes: the remaining length takes two bytes
    packet = connect_packet("alice/rate", "alice", token)
    assert packet[0] == 0x10
    length = (packet[1] & 0x7F) + (packet[2] << 7)
    assert packet[1] & 0x80 and not packet[2] & 0x80
    assert length == len(packet) - 3
    assert packet[3:11] == b"\x00\x04MQTT\x04\xc2"  # protocol 4, username + password + clean session
    assert packet.endswith(b"\x01\x2c" + token.encode())


def figures(result: Result) -> dict[str, object]:
    return {row.metric: row.value for row in result.rows}


def run_quick(
    stack_name: str, stack_options: StackOptions, bench_args: Callable[..., argparse.Namespace]
) -> Result:
    args = bench_args("connect", "--stack", stack_name)
    with running(stack_name, stack_options) as stack:
        result = SCENARIO.run(stack, args, Progress(enabled=False))
    return result


def assert_counted(result: Result, tmp_path: Path) -> dict[str, object]:
    failed = [c.what for c in result.checks if not c.ok]
    assert result.ok, failed
    got = figures(result)
    assert got["first connects: accepted"] == 300
    assert got["reconnects: accepted"] == 300
    assert got["first connects: refused or failed"] == 0
    assert got["reconnects: refused or failed"] == 0
    assert got["idle connections held"] == 200
    for metric in ("first connects/s", "reconnects/s", "idle: time to connect all"):
        assert isinstance(got[metric], float) and got[metric] > 0, metric
    assert isinstance(got["broker memory per connection"], float)
    assert len(result.series["latency_ms"]["CONNACK (first connect)"]) == 300
    assert result.series["throughput"]["connects/s"]
    assert any(name.startswith("connect client") for name in result.cpu)

    path = tmp_path / "connect.json"
    write_json([result], path, {})
    saved = json.loads(path.read_text())["results"][0]
    assert saved["ok"] is True
    assert {r["metric"] for r in saved["rows"]} >= {"first connects/s", "idle connections held"}
    return got


def test_connect_on_the_embedded_stack(
    stack_options: StackOptions, bench_args: Callable[..., argparse.Namespace], tmp_path: Path
) -> None:
    result = run_quick("embedded", stack_options, bench_args)
    got = assert_counted(result, tmp_path)
    assert got["idle: online in presence (REST)"] == 200


@pytest.mark.mariadb
@pytest.mark.redis
def test_connect_on_the_production_stack(
    stack_options: StackOptions, bench_args: Callable[..., argparse.Namespace], tmp_path: Path
) -> None:
    result = run_quick("production", stack_options, bench_args)
    got = assert_counted(result, tmp_path)
    assert got["idle: online in Redis"] == 200
    # the run's devices went offline and their presence keys were removed from Redis
    tag = str(result.params["users"]).split("-", 1)[1].split(" ", 1)[0]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [
            k.format(uid=f"bi{i}-{tag}")
            for i in (0, 199)
            for k in (PRESENCE_DEVICES_KEY, PRESENCE_LAST_SEEN_KEY)
        ]
        assert client.exists(*keys) == 0
    finally:
        client.close()
