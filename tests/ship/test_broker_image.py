"""The broker image's recipe, proved without Docker.

broker/Dockerfile's builder stage compiles the plugin here with its own RUN lines (this machine's
Debian packages stand in for the pinned ones it installs with apt-get: `make plugin`), and its
runtime stage's COPY lines put the plugin, the config template (the root mosquitto.conf) and the
entrypoint in place (tests/ship/dockerfile.py). The entrypoint itself renders the config from the
environment, with `mosquitto` on PATH replaced by a stub that keeps its arguments; the test then
moves the listeners to free loopback ports and the persistence directory into tmp, starts Mosquitto
on that config as the current user, with `messenger api` as its gateway, and an authenticated
client connects (MQTT/TCP and WebSocket) while anonymous and forged ones are refused.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.ship.dockerfile import Rootfs, Stage, build_context, run_stage, stage

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "broker" / "Dockerfile"
SECRET = "ship-gateway-" + uuid.uuid4().hex
REDIS_URL = os.environ.get("MESSENGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MOSQUITTO = "/usr/sbin/mosquitto"
#: the stub that stands in for mosquitto: it records its arguments and what its environment holds
STUB = """#!/bin/sh
printf '%s\\n' "$@" > "$STUB_OUT"
env | cut -d= -f1 > "$STUB_OUT.env"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def _apt_pins(stage: Stage) -> dict[str, str]:
    """package -> version of the stage's `apt-get install` lines."""
    pins: dict[str, str] = {}
    for run in stage.all("RUN"):
        for match in re.finditer(r"apt-get install ([^&]*)", run.args):
            for word in match.group(1).split():
                if not word.startswith("-"):
                    name, _, version = word.partition("=")
                    pins[name] = version
    return pins


@dataclass(frozen=True)
class Image:
    """The built broker image's files on this machine."""

    rootfs: Rootfs
    plugin: Path
    entrypoint: Path
    template: Path
    healthcheck: Path
    ran: list[str]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    tmp = tmp_path_factory.mktemp("broker-image")
    context = build_context(ROOT, tmp / "context")
    builder = Rootfs(tmp / "builder")
    ran = run_stage(
        stage(DOCKERFILE, "builder"),
        context,
        builder,
        env=dict(os.environ),
        skip=lambda command: command.startswith("apt-get"),  # this machine's packages: `make plugin`
    )
    runtime_stage = stage(DOCKERFILE)
    runtime = Rootfs(tmp / "runtime")
    run_stage(runtime_stage, context, runtime, env={}, skip=lambda _: True, stages={"builder": builder})
    entrypoint = runtime_stage.one("ENTRYPOINT").exec_form()
    healthcheck = json.loads(runtime_stage.one("HEALTHCHECK").args.partition(" CMD ")[2])
    script = runtime.host(entrypoint[0]).read_text(encoding="utf-8")
    template_default = re.search(r"\$\{MOSQUITTO_CONFIG_TEMPLATE:-([^}]+)\}", script)
    assert template_default is not None
    template = runtime.host(template_default.group(1))
    plugin_line = re.search(r"^plugin (\S+)$", template.read_text(encoding="utf-8"), re.MULTILINE)
    assert plugin_line is not None
    return Image(
        rootfs=runtime,
        plugin=runtime.host(plugin_line.group(1)),
        entrypoint=runtime.host(entrypoint[0]),
        template=template,
        healthcheck=runtime.host(healthcheck[0]),
        ran=ran,
    )


@dataclass(frozen=True)
class Rendered:
    returncode: int
    stderr: str
    config: Path
    args: list[str]  # what mosquitto was started with
    env_names: set[str]  # the names in mosquitto's environment

    @property
    def text(self) -> str:
        return self.config.read_text(encoding="utf-8")


def render(image: Image, tmp_path: Path, env: dict[str, str]) -> Rendered:
    """Run the image's entrypoint as the container would, with ``env`` (and a stub mosquitto)."""
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir(exist_ok=True)
    (stub_dir / "mosquitto").write_text(STUB, encoding="utf-8")
    (stub_dir / "mosquitto").chmod(0o755)
    config = tmp_path / "run" / "mosquitto.conf"
    out = tmp_path / "stub.out"
    machine = {k: v for k, v in os.environ.items() if not k.startswith(("MESSENGER_", "MOSQUITTO_"))}
    result = subprocess.run(
        [str(image.entrypoint)],
        env=machine
        | {
            "PATH": f"{stub_dir}:{os.environ['PATH']}",
            "STUB_OUT": str(out),
            "MOSQUITTO_CONFIG_TEMPLATE": str(image.template),
            "MOSQUITTO_CONFIG": str(config),
            "MESSENGER_SECRETS_DIR": str(tmp_path / "secrets"),
        }
        | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    ran = out.exists()
    return Rendered(
        returncode=result.returncode,
        stderr=result.stderr,
        config=config,
        args=out.read_text().split() if ran else [],
        env_names=set(Path(f"{out}.env").read_text().split()) if ran else set(),
    )


def plugin_options(config: str) -> dict[str, str]:
    return dict(re.findall(r"^plugin_opt_(\w+) (.*)$", config, re.MULTILINE))


# --- the recipe ---


def test_the_builder_compiles_the_plugin_with_its_makefile(image: Image) -> None:
    assert "make -C broker/mosquitto" in image.ran
    assert image.plugin.is_file()
    runtime = stage(DOCKERFILE)
    assert runtime.base == stage(DOCKERFILE, "builder").base
    assert re.fullmatch(r"debian:bookworm-\d{8}-slim", runtime.base), "pin an exact base image"


def test_apt_packages_are_pinned_and_the_broker_matches_the_headers() -> None:
    build, run = _apt_pins(stage(DOCKERFILE, "builder")), _apt_pins(stage(DOCKERFILE))
    assert {
        "gcc",
        "make",
        "mosquitto-dev",
        "libmosquitto-dev",
        "libcurl4-openssl-dev",
        "libcjson-dev",
    } <= set(build)
    assert {"mosquitto", "libcurl4", "libcjson1", "ca-certificates"} <= set(run)
    assert all(build.values()) and all(run.values()), "pin every apt package (name=version)"
    # the plugin runs against the same Mosquitto, libcurl and cJSON it was compiled for
    assert run["mosquitto"] == build["mosquitto-dev"] == build["libmosquitto-dev"]
    assert run["libcurl4"] == build["libcurl4-openssl-dev"]
    assert run["libcjson1"] == build["libcjson-dev"]


def test_the_image_runs_the_root_config_as_a_user_with_its_ports_and_volume(image: Image) -> None:
    runtime = stage(DOCKERFILE)
    assert image.template.read_bytes() == (ROOT / "mosquitto.conf").read_bytes()
    assert runtime.one("USER").args.split(":")[0] not in ("0", "root")
    config = image.template.read_text(encoding="utf-8")
    listeners = {int(port) for port in re.findall(r"^listener (\d+)", config, re.MULTILINE)}
    assert listeners == {int(port) for port in runtime.one("EXPOSE").args.split()}
    [location] = re.findall(r"^persistence_location (\S+)", config, re.MULTILINE)
    assert json.loads(runtime.one("VOLUME").args) == [location.rstrip("/")]
    assert "allow_anonymous false" in config.splitlines()
    # the rendered config's directory exists in the image, writable by the broker's user only
    script = image.entrypoint.read_text(encoding="utf-8")
    rendered_default = re.search(r"\$\{MOSQUITTO_CONFIG:-([^}]+)\}", script)
    assert rendered_default is not None
    [prepare] = [r.args for r in runtime.all("RUN") if "install -d" in r.args]
    assert "-o mosquitto -g mosquitto -m 0700" in prepare
    assert (
        os.path.dirname(rendered_default.group(1)) in prepare.split()
        and location.rstrip("/") in prepare.split()
    )
    # Mosquitto 2.0 block-buffers stdout when it is not a terminal: a container's log would lag
    assert re.findall(r"^log_dest (.*)$", config, re.MULTILINE) == ["stderr"]


def test_the_config_agrees_with_the_one_the_tests_run() -> None:
    """mosquitto.test.conf (scripts/topology.py, the e2e tests) differs from the image's only in
    addresses, paths, the user, timing and where the log goes."""
    local = {"user", "listener", "persistence_location", "log_dest"}  # and every @placeholder@
    scratch = {"autosave_interval", "persistent_client_expiration"}  # a test broker's are shorter

    def directives(path: Path) -> list[tuple[str, str]]:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [
            (line.split()[0], line.partition(" ")[2]) for line in lines if line and not line.startswith("#")
        ]

    test, image = directives(ROOT / "mosquitto.test.conf"), directives(ROOT / "mosquitto.conf")
    filled_in = {key for key, value in test if "@" in value}
    assert [d for d in test if d[0] not in local | scratch | filled_in] == [
        d for d in image if d[0] not in local | scratch | filled_in
    ]
    assert scratch <= {key for key, _ in test} and scratch <= {key for key, _ in image}


# --- the entrypoint ---


def test_the_entrypoint_renders_the_template_and_runs_mosquitto(image: Image, tmp_path: Path) -> None:
    env = {
        "MESSENGER_GATEWAY_URL": "http://api:9100",
        "MESSENGER_GATEWAY_SECRET": SECRET,
        "MESSENGER_SERVICE_USER": "svc-account",
        "MESSENGER_PLUGIN_CACHE_TTL_S": "5",
        "MESSENGER_PLUGIN_OFFLINE_MAX": "500",
    }
    rendered = render(image, tmp_path, env)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.args == ["-c", str(rendered.config)]
    assert stat.S_IMODE(rendered.config.stat().st_mode) == 0o600  # it holds the secret
    template = image.template.read_text(encoding="utf-8")
    options = plugin_options(rendered.text)
    assert options == plugin_options(template) | {
        "gateway_url": "http://api:9100",
        "gateway_secret": SECRET,
        "service_user": "svc-account",
        "cache_ttl_s": "5",
        "offline_max": "500",
    }
    # every other line is the template's, in order
    kept = [line for line in rendered.text.splitlines() if not line.startswith("plugin_opt_")]
    assert kept == [line for line in template.splitlines() if not line.startswith("plugin_opt_")]
    # options follow the plugin line
    lines = rendered.text.splitlines()
    plugin_at = next(i for i, line in enumerate(lines) if line.startswith("plugin "))
    assert all(i > plugin_at for i, line in enumerate(lines) if line.startswith("plugin_opt_"))
    # the secret is in the file only, not in Mosquitto's environment
    assert "MESSENGER_GATEWAY_SECRET" not in rendered.env_names
    assert not {name for name in rendered.env_names if name.startswith("RENDER_OPT_")}


def test_the_entrypoint_reads_the_secret_from_the_secrets_directory(image: Image, tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "messenger_gateway_secret").write_text(SECRET + "\n", encoding="utf-8")
    rendered = render(image, tmp_path, {"MESSENGER_GATEWAY_URL": "https://gateway.example:9100"})
    assert rendered.returncode == 0, rendered.stderr
    assert plugin_options(rendered.text)["gateway_secret"] == SECRET
    assert plugin_options(rendered.text)["gateway_url"] == "https://gateway.example:9100"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MESSENGER_GATEWAY_SECRET": SECRET}, "MESSENGER_GATEWAY_URL is required"),
        ({"MESSENGER_GATEWAY_URL": "api:9100", "MESSENGER_GATEWAY_SECRET": SECRET}, "http:// or https://"),
        ({"MESSENGER_GATEWAY_URL": "http://api:9100"}, "the gateway secret is required"),
        ({"MESSENGER_GATEWAY_URL": "http://api:9100", "MESSENGER_GATEWAY_SECRET": "short"}, "at least 16"),
        (
            {
                "MESSENGER_GATEWAY_URL": "http://api:9100",
                "MESSENGER_GATEWAY_SECRET": SECRET + "\nplugin /x.so",
            },
            "control characters",
        ),
        (
            {
                "MESSENGER_GATEWAY_URL": "http://api:9100",
                "MESSENGER_GATEWAY_SECRET": SECRET,
                "MESSENGER_PLUGIN_TIMEOUT_MS": "1s",
            },
            "whole number",
        ),
    ],
    ids=["no-url", "bad-url", "no-secret", "short-secret", "injected-line", "bad-number"],
)
def test_the_entrypoint_refuses_a_bad_configuration(
    image: Image, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    rendered = render(image, tmp_path, env)
    assert rendered.returncode == 78, rendered.stderr
    assert message in rendered.stderr
    assert not rendered.args  # mosquitto did not start
    assert SECRET not in rendered.stderr


# --- the broker running the image's config ---


@dataclass(frozen=True)
class Running:
    mqtt_port: int
    ws_port: int
    log: Path
    api_env: dict[str, str]


def _api_env(tmp: Path, mqtt_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_") and k != "PYTHONPATH"}
    return env | {
        "MESSENGER_ENVIRONMENT": "development",
        "MESSENGER_DATABASE_URL": f"sqlite:///{tmp / 'gateway.db'}",
        "MESSENGER_REDIS_URL": REDIS_URL,
        "MESSENGER_GATEWAY_SECRET": SECRET,
        "MESSENGER_API_PORT": str(_free_port()),
        "MESSENGER_INTERNAL_PORT": str(_free_port()),
        "MESSENGER_MQTT_HOST": "127.0.0.1",
        "MESSENGER_MQTT_PORT": str(mqtt_port),
    }


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _wait(
    predicate: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"{what} exited: {log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"{what}: not ready within {timeout:.0f} s"
        time.sleep(0.1)


def _healthy(port: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    return False


def _on_loopback(config: str, *, image: Image, mqtt_port: int, ws_port: int, data: Path) -> str:
    """The image's rendered config with what only a container has moved onto this machine."""
    runtime = stage(DOCKERFILE)
    volume = json.loads(runtime.one("VOLUME").args)[0]
    [plugin_copy] = [c for c in runtime.all("COPY") if c.flags()[0].get("from") == "builder"]
    in_image = plugin_copy.flags()[1][-1]
    moves = {
        "listener 1883 0.0.0.0": f"listener {mqtt_port} 127.0.0.1",
        "listener 8083 0.0.0.0": f"listener {ws_port} 127.0.0.1",
        f"persistence_location {volume}/": f"persistence_location {data}/",
        f"plugin {in_image}": f"plugin {image.plugin}",
    }
    lines = config.splitlines()
    for old, new in moves.items():
        assert lines.count(old) == 1, f"the image's config has no line {old!r}"
        lines[lines.index(old)] = new
    # as root, Mosquitto would switch to the user "mosquitto", who cannot write tmp
    return "\n".join([f"user {getpass.getuser()}", *lines]) + "\n"


@pytest.fixture(scope="module")
def running(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("broker-run")
    mqtt_port, ws_port = _free_port(), _free_port()
    api_env = _api_env(tmp, mqtt_port)
    migrated = _cli("db", "upgrade", env=api_env)
    assert migrated.returncode == 0, migrated.stderr
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        api_log = tmp / "api.log"
        logs.append(api_log.open("wb"))
        api = subprocess.Popen(
            [sys.executable, "-m", "launch.cli", "api"],
            env=api_env,
            cwd=ROOT,
            stdout=logs[-1],
            stderr=subprocess.STDOUT,
        )
        procs.append(api)
        _wait(lambda: _healthy(api_env["MESSENGER_API_PORT"]), "messenger api", api, api_log)

        # the broker's config as the container's entrypoint renders it: the gateway is the API's
        # internal port (the gateway routes are only there)
        rendered = render(
            image,
            tmp,
            {
                "MESSENGER_GATEWAY_URL": f"http://127.0.0.1:{api_env['MESSENGER_INTERNAL_PORT']}",
                "MESSENGER_GATEWAY_SECRET": SECRET,
            },
        )
        assert rendered.returncode == 0, rendered.stderr
        (tmp / "data").mkdir()
        config = tmp / "mosquitto.conf"
        config.write_text(
            _on_loopback(rendered.text, image=image, mqtt_port=mqtt_port, ws_port=ws_port, data=tmp / "data"),
            encoding="utf-8",
        )
        broker_log = tmp / "mosquitto.log"
        logs.append(broker_log.open("wb"))
        broker = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=logs[-1], stderr=subprocess.STDOUT)
        procs.append(broker)
        _wait(
            lambda: _port_open(mqtt_port) and _port_open(ws_port), "mosquitto", broker, broker_log, timeout=15
        )
        yield Running(mqtt_port=mqtt_port, ws_port=ws_port, log=broker_log, api_env=api_env)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def connect(
    port: int, client_id: str, username: str | None, password: str | None, transport: str = "tcp"
) -> ReasonCode | None:
    """The CONNACK's reason code, or None if the broker closed the connection without one."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        transport="websockets" if transport == "websockets" else "tcp",
        reconnect_on_failure=False,
    )
    if username is not None:
        client.username_pw_set(username, password)
    outcome: list[ReasonCode | None] = []
    client.on_connect = lambda _c, _u, _f, reason, _p=None: outcome.append(reason)
    client.on_disconnect = lambda _c, _u, _f, _r, _p=None: outcome.append(None)
    try:
        client.connect("127.0.0.1", port, keepalive=30)
        deadline = time.monotonic() + 15
        while not outcome and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        if outcome and outcome[0] is not None and not outcome[0].is_failure:
            client.disconnect()
            client.loop(timeout=0.1)
    finally:
        client._reset_sockets()
    assert outcome, "no answer to CONNECT"
    return outcome[0]


def _token(user: str, env: dict[str, str]) -> str:
    issued = _cli("token", "issue", user, env=env)
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_an_authenticated_client_connects_and_others_are_refused(running: Running, transport: str) -> None:
    port = running.mqtt_port if transport == "tcp" else running.ws_port
    user = f"alice-{uuid.uuid4().hex[:8]}"
    token = _token(user, running.api_env)

    accepted = connect(port, f"{user}/ship", user, token, transport)
    assert accepted is not None and not accepted.is_failure, accepted

    anonymous = connect(port, f"{user}/anon", None, None, transport)
    assert anonymous is None or anonymous.is_failure
    forged = connect(port, f"{user}/forged", user, token[:-4] + "AAAA", transport)
    assert forged is None or forged.is_failure
    someone_else = connect(port, f"mallory-{user}/x", user, token, transport)
    assert someone_else is None or someone_else.is_failure


def test_the_broker_logs_at_once(running: Running) -> None:
    # log_dest stderr: what a container's log shows while the broker runs, not when it exits
    assert connect(running.mqtt_port, "nobody/x", None, None) is not None
    deadline = time.monotonic() + 10
    while "refused a client" not in running.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, running.log.read_text(errors="replace")
        time.sleep(0.1)


def test_the_healthcheck_sees_the_broker_serving(image: Image, running: Running) -> None:
    ok = subprocess.run(
        [str(image.healthcheck), str(running.mqtt_port)], capture_output=True, timeout=10, check=False
    )
    assert ok.returncode == 0, ok.stderr
    closed = subprocess.run(
        [str(image.healthcheck), str(_free_port())], capture_output=True, timeout=10, check=False
    )
    assert closed.returncode != 0
