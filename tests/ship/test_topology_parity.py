"""One topology, three descriptions: ``scripts/topology.py`` (its :data:`ROLES` table, which
:class:`Topology` starts every process from), ``docker-compose.yml`` and the two tables of
``docs/production.md``. :func:`problems` compares them (roles, commands, variables, secrets,
ports) and returns every difference; the real files must have none, and each kind of drift,
fed in as a mutated copy, must be caught.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.topology import INTERNAL_PORT, ROLES, TOPOLOGY_UNSET, Role, Topology

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SERVE = ROOT / "compose.serve.yml"
DOCS = ROOT / "docs" / "production.md"
NEW_SECRETS = ROOT / "scripts" / "new-secrets.sh"

#: Services of docker-compose.yml that run no Messenger role: the datastores.
INFRASTRUCTURE = frozenset({"mariadb", "redis"})
#: A service's role is its name without a ``-N`` suffix (handler-1, handler-2 -> handler).
_REPLICA = re.compile(r"-\d+$")
_CODE = re.compile(r"`([^`]+)`")
_NUMBER = re.compile(r"\b(\d{2,5})\b")
TICK = "✓"


# --- reading the three descriptions ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DocRole:
    """What docs/production.md says about one role."""

    command: str = ""
    public: frozenset[int] = frozenset()
    internal: int | None = None
    settings: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()


def load_compose(path: Path) -> dict[str, Any]:
    """The compose file as plain data: anchors and merge keys resolved, nothing shared between
    services (so that a test can change one service alone)."""
    data: dict[str, Any] = json.loads(json.dumps(yaml.safe_load(path.read_text())))
    return data


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of ``text``, as rows of stripped cells (the separator row included)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def _table(text: str, first: str, *, containing: str) -> list[list[str]]:
    for table in markdown_tables(text):
        if table[0][0] == first and containing in table[0]:
            return table
    raise AssertionError(f"docs/production.md has no table with the columns {first!r}, {containing!r}")


def _code(cell: str) -> str:
    match = _CODE.search(cell)
    return match.group(1) if match else ""


def parse_docs(text: str) -> dict[str, DocRole]:
    """The process table (role, command, public ports, internal port) and the variable table
    (one row per variable, a tick per role) of docs/production.md."""
    processes = _table(text, "role", containing="command")
    header = processes[0]
    column = {name: header.index(name) for name in ("command", "public ports", "internal port")}
    roles: dict[str, DocRole] = {}
    for row in processes[2:]:
        name = _code(row[0])
        if name in roles:
            raise AssertionError(f"docs/production.md lists the role {name!r} twice")
        internal = [int(n) for n in _NUMBER.findall(row[column["internal port"]])]
        roles[name] = DocRole(
            command=_code(row[column["command"]]),
            public=frozenset(int(n) for n in _NUMBER.findall(row[column["public ports"]])),
            internal=internal[0] if internal else None,
        )
    variables = _table(text, "variable", containing="api")
    role_columns = variables[0][1:]
    settings: dict[str, set[str]] = {name: set() for name in role_columns}
    secrets: dict[str, set[str]] = {name: set() for name in role_columns}
    for row in variables[2:]:
        variable = _code(row[0])
        for name, cell in zip(role_columns, row[1:], strict=True):
            if cell not in ("", TICK):
                raise AssertionError(f"docs/production.md: {variable} / {name}: {cell!r} is no {TICK}")
            if cell == TICK:
                (secrets if "(secret)" in row[0] else settings)[name].add(variable)
    for name in role_columns:
        role = roles.get(name, DocRole())
        roles[name] = dataclasses.replace(
            role, settings=frozenset(settings[name]), secrets=frozenset(secrets[name])
        )
    return roles


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) if "=" in item else [item, None] for item in env]
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def published_targets(service: Mapping[str, Any]) -> set[int]:
    """The container ports a service publishes (long or short syntax)."""
    targets = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            targets.add(int(port["target"]))
        else:  # [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]; HOST_IP and PUBLISHED may be ${...}
            targets.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return targets


def secret_names(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, file name in /run/secrets) of each secret a service gets."""
    names = []
    for secret in service.get("secrets") or []:
        if isinstance(secret, str):
            names.append((secret, secret))
        else:
            names.append((secret["source"], secret.get("target", secret["source"])))
    return names


# --- the comparison ---------------------------------------------------------------------------


def problems(roles: Mapping[str, Role], compose: Mapping[str, Any], docs: Mapping[str, DocRole]) -> list[str]:
    """Every difference between the role table, the compose file and the docs."""
    found: list[str] = []
    services: Mapping[str, Any] = compose.get("services", {})
    by_role: dict[str, list[str]] = {}
    for name in services:
        if name not in INFRASTRUCTURE:
            by_role.setdefault(_REPLICA.sub("", name), []).append(name)

    for role in sorted(by_role.keys() - roles.keys()):
        found.append(f"compose: service(s) {by_role[role]} run no role of ROLES (scripts/topology.py)")
    for role in sorted(roles.keys() - by_role.keys()):
        found.append(f"compose: no service runs the role {role!r}")
    for role in sorted(docs.keys() - roles.keys()):
        found.append(f"docs: {role!r} is no role of ROLES (scripts/topology.py)")
    for role in sorted(roles.keys() - docs.keys()):
        found.append(f"docs: the role {role!r} is missing")

    # one image for every Messenger role, the role chosen by the command
    images = {
        str(services[n].get("image"))
        for r, names in by_role.items()
        if r in roles and roles[r].command
        for n in names
    }
    if len(images) > 1:
        found.append(f"compose: the Messenger services use different images: {sorted(images)}")

    declared_secrets = compose.get("secrets") or {}
    for role, spec in roles.items():
        found += _compose_role(spec, {n: services[n] for n in by_role.get(role, [])}, declared_secrets)
        if role in docs:
            found += _docs_role(spec, docs[role])

    found += _wiring(roles, services, by_role)
    for name in sorted(INFRASTRUCTURE & services.keys()):
        if published_targets(services[name]):
            found.append(f"compose: {name} publishes ports; only the roles' public ports are published")
    return found


def _compose_role(spec: Role, services: Mapping[str, Any], declared_secrets: Mapping[str, Any]) -> list[str]:
    found = []
    for name, service in services.items():
        where = f"compose: {name} ({spec.name})"
        if spec.command:
            if service.get("command") != list(spec.command):
                found.append(f"{where}: command {service.get('command')!r}, not {list(spec.command)!r}")
        elif "command" in service:
            found.append(f"{where}: the image's own command runs this role; no command: here")
        env = environment(service)
        for variable in sorted(spec.settings - env.keys()):
            found.append(f"{where}: {variable} is missing from environment:")
        for variable in sorted(env.keys() - spec.settings):
            found.append(f"{where}: environment: has {variable}, which ROLES does not declare for it")
        secrets = secret_names(service)
        got = {source.upper() for source, _ in secrets}
        for variable in sorted(spec.secrets - got):
            found.append(f"{where}: the secret {variable.lower()} is missing")
        for variable in sorted(got - spec.secrets):
            found.append(f"{where}: gets the secret {variable.lower()}, which ROLES does not declare for it")
        for source, target in secrets:
            if target != source:
                found.append(f"{where}: secret {source} mounted as {target}; the processes read {source}")
            if source not in declared_secrets:
                found.append(f"{where}: secret {source} is not declared under secrets:")
        expected = {port.number for port in spec.public}
        if (targets := published_targets(service)) != expected:
            found.append(f"{where}: publishes {sorted(targets)}, not {sorted(expected)}")
        for port in spec.public:
            if port.variable and env.get(port.variable) != str(port.number):
                found.append(f"{where}: {port.variable}={env.get(port.variable)}, not {port.number}")
        if spec.internal is not None and env.get("MESSENGER_INTERNAL_PORT") != str(INTERNAL_PORT):
            found.append(
                f"{where}: MESSENGER_INTERNAL_PORT={env.get('MESSENGER_INTERNAL_PORT')}, not {INTERNAL_PORT}"
            )
    return found


def _docs_role(spec: Role, doc: DocRole) -> list[str]:
    where = f"docs: {spec.name}"
    found = []
    if spec.command:
        if doc.command != " ".join(("messenger", *spec.command)):
            found.append(f"{where}: command `{doc.command}`, not `messenger {' '.join(spec.command)}`")
    elif not doc.command or doc.command.startswith("messenger"):
        found.append(f"{where}: command `{doc.command}`; this role is no messenger command")
    if doc.public != {port.number for port in spec.public}:
        found.append(
            f"{where}: public ports {sorted(doc.public)}, not {sorted(p.number for p in spec.public)}"
        )
    internal = spec.internal.number if spec.internal else None
    if doc.internal != internal:
        found.append(f"{where}: internal port {doc.internal}, not {internal}")
    for variable in sorted(spec.settings ^ doc.settings):
        side = "ticks" if variable in doc.settings else "does not tick"
        found.append(f"{where}: the variable table {side} {variable}")
    for variable in sorted(spec.secrets ^ doc.secrets):
        side = "ticks" if variable in doc.secrets else "does not tick"
        found.append(f"{where}: the variable table {side} the secret {variable}")
    return found


def _wiring(
    roles: Mapping[str, Role], services: Mapping[str, Any], by_role: Mapping[str, list[str]]
) -> list[str]:
    """The values that connect the services: broker address, gateway, handler names."""
    found = []
    brokers = by_role.get("broker", [])
    broker_ports = {str(port.number) for port in roles["broker"].public} if "broker" in roles else set()
    names: dict[str, str] = {}
    for name, service in services.items():
        env = environment(service)
        if "MESSENGER_MQTT_HOST" in env and env["MESSENGER_MQTT_HOST"] not in brokers:
            found.append(f"compose: {name}: MESSENGER_MQTT_HOST={env['MESSENGER_MQTT_HOST']} is no broker")
        if "MESSENGER_MQTT_PORT" in env and env["MESSENGER_MQTT_PORT"] not in broker_ports:
            found.append(
                f"compose: {name}: MESSENGER_MQTT_PORT={env['MESSENGER_MQTT_PORT']} is no broker port"
            )
        if "MESSENGER_GATEWAY_URL" in env:
            gateways = {f"http://{api}:{INTERNAL_PORT}" for api in by_role.get("api", [])}
            if env["MESSENGER_GATEWAY_URL"] not in gateways:
                found.append(
                    f"compose: {name}: MESSENGER_GATEWAY_URL={env['MESSENGER_GATEWAY_URL']}, "
                    f"not the API's internal port ({sorted(gateways)})"
                )
        if handler_name := env.get("MESSENGER_HANDLER_NAME"):
            if handler_name in names:
                found.append(f"compose: {name} and {names[handler_name]} share the name {handler_name}")
            names[handler_name] = name
    return found


# --- the real files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def docs_text() -> str:
    return DOCS.read_text()


def test_compose_docs_and_topology_describe_one_topology(compose: dict[str, Any], docs_text: str) -> None:
    assert problems(ROLES, compose, parse_docs(docs_text)) == []


def test_topology_gives_each_process_exactly_its_roles_variables(tmp_path: Path) -> None:
    topology = Topology(workdir=tmp_path)
    for name, spec in ROLES.items():
        env = {key for key in topology.env(name) if key.startswith("MESSENGER_")}
        declared = spec.settings | spec.secrets
        assert env <= declared, f"{name}: {sorted(env - declared)}"
        assert declared - TOPOLOGY_UNSET <= env, f"{name}: {sorted(declared - TOPOLOGY_UNSET - env)}"
    # everything the topology wires is declared by some role
    every = set().union(*(spec.settings | spec.secrets for spec in ROLES.values()))
    for name in ROLES:
        assert topology.wiring(name, name).keys() <= every


def test_topology_refuses_a_variable_its_role_does_not_declare(tmp_path: Path) -> None:
    topology = Topology(workdir=tmp_path)
    with pytest.raises(ValueError, match="MESSENGER_HANDLER_NAME"):
        topology.env("bridge", MESSENGER_HANDLER_NAME="bridge-1")


def test_topology_gives_every_role_with_a_listener_its_own_internal_port(tmp_path: Path) -> None:
    topology = Topology(workdir=tmp_path)
    ports = {}
    for name in ("api", "bridge", "handler-1", "handler-2", "worker-1"):
        role = _REPLICA.sub("", name)
        ports[name] = int(topology.env(role, name)["MESSENGER_INTERNAL_PORT"])
        assert topology.internal_url(name) == f"http://127.0.0.1:{ports[name]}"
    assert len(set(ports.values())) == len(ports)
    for name in ("broker", "migrate"):
        assert "MESSENGER_INTERNAL_PORT" not in topology.env(name)
    gateway = topology.env("broker", "mosquitto")["MESSENGER_GATEWAY_URL"]
    assert gateway == topology.internal_url("api")


def test_the_images_expose_the_documented_ports() -> None:
    """The Dockerfiles' EXPOSE lines agree with the roles' ports (the app image also EXPOSEs
    serve's own ports)."""

    def exposed(path: Path) -> set[int]:
        lines = [line for line in path.read_text().splitlines() if line.startswith("EXPOSE ")]
        return {int(port.split("/")[0]) for line in lines for port in line.split()[1:]}

    app = exposed(ROOT / "Dockerfile")
    assert {INTERNAL_PORT, *(p.number for p in ROLES["api"].public)} <= app
    assert exposed(ROOT / "broker" / "Dockerfile") == {p.number for p in ROLES["broker"].public}


def test_every_compose_secret_is_made_by_new_secrets_sh() -> None:
    script = NEW_SECRETS.read_text()
    for path in (COMPOSE, COMPOSE_SERVE):
        for name, secret in load_compose(path)["secrets"].items():
            assert secret == {"file": f"./secrets/{name}"}, f"{path.name}: {name}"
            assert re.search(rf"\b{name}\b", script), f"scripts/new-secrets.sh does not make {name}"


def test_the_try_it_compose_runs_serve_on_loopback_only() -> None:
    (service,) = load_compose(COMPOSE_SERVE)["services"].values()
    assert service["command"] == ["serve"]
    assert [source for source, _ in secret_names(service)] == ["messenger_jwt_secret"]
    assert sorted(service["ports"]) == ["127.0.0.1:1884:1884", "127.0.0.1:8080:8080", "127.0.0.1:8083:8083"]


# --- each kind of drift is caught -----------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """services.<path> = value, path dotted (handler-1.environment.MESSENGER_NODE_ID)."""

    def mutate(compose: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = compose["services"]
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(compose: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = compose["services"]
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _drop_secret(service: str, secret: str) -> Mutation:
    return lambda compose: compose["services"][service]["secrets"].remove(secret)


def _publish(service: str, port: int) -> Mutation:
    return lambda compose: compose["services"][service]["ports"].append(f"127.0.0.1:{port}:{port}")


def _move_target(service: str, old: int, new: int) -> Mutation:
    def mutate(compose: dict[str, Any]) -> None:
        for port in compose["services"][service]["ports"]:
            if port["target"] == old:
                port["target"] = new

    return mutate


COMPOSE_DRIFT: dict[str, tuple[Mutation, str]] = {
    "service removed": (_delete("bridge"), "no service runs the role 'bridge'"),
    "unknown service": (_set("cron", {"image": "x", "command": ["cron"]}), "['cron'] run no role"),
    "command changed": (_set("handler-2.command", ["worker"]), "handler-2 (handler): command ['worker']"),
    "variable removed": (
        _delete("bridge.environment.MESSENGER_NODE_ID"),
        "bridge (bridge): MESSENGER_NODE_ID is missing",
    ),
    "variable added": (
        _set("worker-1.environment.MESSENGER_BACKGROUND_WORK", "true"),
        "worker-1 (worker): environment: has MESSENGER_BACKGROUND_WORK",
    ),
    "secret removed": (
        _drop_secret("api", "messenger_gateway_secret"),
        "api (api): the secret messenger_gateway_secret is missing",
    ),
    "secret added": (
        _set("bridge.secrets", ["messenger_jwt_secret", "messenger_database_password"]),
        "bridge (bridge): gets the secret messenger_database_password",
    ),
    "internal port published": (
        _publish("api", INTERNAL_PORT),
        f"api (api): publishes [8080, {INTERNAL_PORT}]",
    ),
    "public port moved": (_move_target("broker", 1883, 1884), "broker (broker): publishes [1884, 8083]"),
    "internal port changed": (
        _set("handler-1.environment.MESSENGER_INTERNAL_PORT", "9101"),
        "handler-1 (handler): MESSENGER_INTERNAL_PORT=9101",
    ),
    "gateway on the public port": (
        _set("broker.environment.MESSENGER_GATEWAY_URL", "http://api:8080"),
        "MESSENGER_GATEWAY_URL=http://api:8080, not the API's internal port",
    ),
    "broker port wrong": (
        _set("api.environment.MESSENGER_MQTT_PORT", "1884"),
        "api: MESSENGER_MQTT_PORT=1884 is no broker port",
    ),
    "handler names shared": (
        _set("handler-2.environment.MESSENGER_HANDLER_NAME", "handler-1"),
        "share the name handler-1",
    ),
    "datastore published": (_set("redis.ports", ["127.0.0.1:6379:6379"]), "redis publishes ports"),
}


@pytest.mark.parametrize("drift", COMPOSE_DRIFT)
def test_compose_drift_is_caught(drift: str, compose: dict[str, Any], docs_text: str) -> None:
    mutate, expected = COMPOSE_DRIFT[drift]
    broken = copy.deepcopy(compose)
    mutate(broken)
    found = problems(ROLES, broken, parse_docs(docs_text))
    assert any(expected in problem for problem in found), found


DOCS_DRIFT: dict[str, tuple[str, str, str]] = {
    # (text in docs/production.md, its replacement, the problem expected)
    "variable untick": (
        "| `MESSENGER_REDIS_URL` | | | ✓ | ✓ | ✓ | ✓ |",
        "| `MESSENGER_REDIS_URL` | | | ✓ | ✓ | | ✓ |",
        "docs: bridge: the variable table does not tick MESSENGER_REDIS_URL",
    ),
    "secret tick": (
        "| `MESSENGER_GATEWAY_SECRET` (secret) | ✓ | | ✓ | | | |",
        "| `MESSENGER_GATEWAY_SECRET` (secret) | ✓ | | ✓ | ✓ | | |",
        "docs: handler: the variable table ticks the secret MESSENGER_GATEWAY_SECRET",
    ),
    "role row removed": (
        "| `bridge` | the presence bridge, one per broker node | `messenger bridge` | none | 9100 |",
        "| `bridgework` | the presence bridge, one per broker node | `messenger bridge` | none | 9100 |",
        "docs: 'bridgework' is no role",
    ),
    "command": (
        "| `messenger worker` | none | 9100 |",
        "| `messenger handler` | none | 9100 |",
        "docs: worker: command `messenger handler`",
    ),
    "public port": ("| 8080 (REST) | 9100 |", "| 8000 (REST) | 9100 |", "docs: api: public ports [8000]"),
    "internal port": (
        "| `messenger bridge` | none | 9100 |",
        "| `messenger bridge` | none | none |",
        "docs: bridge: internal port None, not 9100",
    ),
}


@pytest.mark.parametrize("drift", DOCS_DRIFT)
def test_docs_drift_is_caught(drift: str, compose: dict[str, Any], docs_text: str) -> None:
    old, new, expected = DOCS_DRIFT[drift]
    assert docs_text.count(old) == 1, f"the docs no longer contain {old!r}: update this test"
    found = problems(ROLES, compose, parse_docs(docs_text.replace(old, new)))
    assert any(expected in problem for problem in found), found


def _roles(**changes: Role) -> dict[str, Role]:
    return {**ROLES, **changes}


ROLES_DRIFT: dict[str, tuple[Mapping[str, Role], list[str]]] = {
    "variable declared": (
        _roles(
            handler=dataclasses.replace(
                ROLES["handler"], settings=ROLES["handler"].settings | {"MESSENGER_SESSION_EXPIRY_S"}
            )
        ),
        [
            "handler-1 (handler): MESSENGER_SESSION_EXPIRY_S is missing",
            "docs: handler: the variable table does not tick MESSENGER_SESSION_EXPIRY_S",
        ],
    ),
    "internal listener dropped": (
        _roles(bridge=dataclasses.replace(ROLES["bridge"], internal=None)),
        ["docs: bridge: internal port 9100, not None"],
    ),
    "role added": (
        _roles(cron=Role("cron", ("cron",), frozenset())),
        ["compose: no service runs the role 'cron'", "docs: the role 'cron' is missing"],
    ),
}


@pytest.mark.parametrize("drift", ROLES_DRIFT)
def test_role_table_drift_is_caught(drift: str, compose: dict[str, Any], docs_text: str) -> None:
    roles, expected = ROLES_DRIFT[drift]
    found = problems(roles, compose, parse_docs(docs_text))
    for problem in expected:
        assert any(problem in line for line in found), (problem, found)
