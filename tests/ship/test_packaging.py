"""The Python image's recipe, proved without Docker.

The builder stage of ./Dockerfile runs here as written (its COPY and RUN lines, from a build
context made with .dockerignore; tests/ship/dockerfile.py): the runtime lock and the wheel go into
a fresh venv, and only that venv is what the runtime stage copies. Then, outside the source tree,
this runs what the image runs: each role's ``--help``, the migrations on a fresh SQLite file, and
``messenger api`` answering its health endpoints and ``messenger probe`` (the HEALTHCHECK).

A runtime dependency missing from the lock, a module, a migration or package data missing from
the wheel, or a package the Dockerfile does not copy fails here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from messenger.models import Base
from tests.ship.dockerfile import Rootfs, build_context, run_stage, stage

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements" / "runtime.lock"
#: the venv the builder fills and the runtime stage copies (and nothing else)
VENV = "/opt/messenger"
#: the chat app's build in the web stage, and where the runtime stage puts it
WEB_DIST = "/web/app/dist"
WEB_DIR = "/opt/messenger-web"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: the import packages the wheel carries
PACKAGES = tuple(p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
ROLES = [["api"], ["handler"], ["bridge"], ["worker"], ["serve"], ["db", "upgrade"], ["probe"]]
REDIS_URL = os.environ.get("MESSENGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# the module's first test also waits for the build (the lock's wheels come from PyPI: ~40 s here)
pytestmark = pytest.mark.timeout(480)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _machine_env() -> dict[str, str]:
    """This process's environment without anything that would point Python at the source tree
    or configure Messenger."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MESSENGER_")}


@dataclass(frozen=True)
class Image:
    """The built image's filesystem (its venv and WORKDIR) and environment, on this machine."""

    rootfs: Rootfs
    context: Path
    venv: Path
    workdir: Path
    env: dict[str, str]

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``args`` as the image's processes run: from the WORKDIR, with the image's environment."""
        return subprocess.run(
            list(args),
            cwd=self.workdir,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def messenger(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "messenger"), *args, env=env)

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def site_packages(self) -> Path:
        [found] = (self.venv / "lib").glob("python3*/site-packages")
        return found


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    tmp = tmp_path_factory.mktemp("image")
    context = build_context(ROOT, tmp / "context")
    builder = Rootfs(tmp / "builder")
    # this machine stands in for the base image: `python` is the interpreter running the tests
    build_env = _machine_env() | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run_stage(stage(DOCKERFILE, "builder"), context, builder, env=build_env, translate=[VENV], timeout=420)

    # the runtime stage: its COPY lines (the venv) and WORKDIR; its RUN lines only add the user
    runtime_stage = stage(DOCKERFILE)
    runtime = Rootfs(tmp / "runtime")
    # the web stage (npm ci, vite build) is make web-test's: a stub stands in for its dist/
    web = Rootfs(tmp / "web")
    web.host(WEB_DIST).mkdir(parents=True)
    web.host(WEB_DIST + "/index.html").write_text("<!doctype html><title>stub</title>", encoding="utf-8")
    run_stage(
        runtime_stage, context, runtime, env={}, skip=lambda _: True, stages={"builder": builder, "web": web}
    )
    env = {k: runtime.translate(v, [VENV, WEB_DIR]) for k, v in runtime_stage.env(_machine_env()).items()}
    # the image listens on all interfaces; tests here stay on loopback
    env["MESSENGER_BIND_HOST"] = "127.0.0.1"
    return Image(
        rootfs=runtime,
        context=context,
        venv=runtime.host(VENV),
        workdir=runtime.host(runtime_stage.workdir()),
        env=env,
    )


# --- the recipe itself ---


def test_the_runtime_stage_gets_only_the_venv_and_runs_as_a_user() -> None:
    runtime = stage(DOCKERFILE)
    builder = stage(DOCKERFILE, "builder")
    assert runtime.base == builder.base
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", runtime.base), "pin an exact Python release"
    copies = [c.flags() for c in runtime.all("COPY")]
    assert copies == [({"from": "builder"}, [VENV, VENV]), ({"from": "web"}, [WEB_DIST, WEB_DIR])]
    assert runtime.env({})["MESSENGER_WEB_DIR"] == WEB_DIR
    web = stage(DOCKERFILE, "web")
    assert re.fullmatch(r"node:\d+\.\d+\.\d+-[a-z]+-slim", web.base), "pin an exact Node.js release"
    assert any("npm ci" in r.args for r in web.all("RUN")), "install exactly what the lockfile pins"
    assert not any(word in r.args for r in runtime.all("RUN") for word in ("pip", "apt", "gcc", "make"))
    user = runtime.one("USER").args
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0
    assert runtime.one("ENTRYPOINT").exec_form() == ["messenger"]
    options, _, command = runtime.one("HEALTHCHECK").args.partition(" CMD ")
    assert {"--interval", "--timeout", "--start-period", "--retries"} <= {
        o.split("=")[0] for o in options.split()
    }
    assert json.loads(command) == ["messenger", "probe"]


@dataclass(frozen=True)
class Pin:
    version: str
    conditional: bool  # with an environment marker (e.g. only on Windows)


def _lock() -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            requirement, _, marker = line.rstrip(" \\").partition(";")
            name, _, version = requirement.partition("==")
            pins[canonicalize_name(name.strip())] = Pin(version.strip(), bool(marker.strip()))
    return pins


def test_the_lock_pins_every_runtime_dependency_of_pyproject() -> None:
    """The quick check (the builder's `pip check` finds it too, later): when this fails, run the
    command at the top of requirements/runtime.lock."""
    pins = _lock()
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in {LOCK.name}: regenerate it"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{LOCK.name} pins {requirement.name}=={pin.version}, outside {requirement.specifier}: "
            "regenerate it"
        )


def test_the_venv_holds_the_lock_and_the_wheel_and_nothing_else(image: Image) -> None:
    locked = _lock()
    listing = image.run(
        image.python,
        "-c",
        "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
    )
    assert listing.returncode == 0, listing.stderr
    installed = {canonicalize_name(name) for name in listing.stdout.split()}
    assert "messenger-mqtt" in installed
    assert installed - {"messenger-mqtt"} <= set(locked), "installed but not locked"
    assert {name for name, pin in locked.items() if not pin.conditional} <= installed
    extras = {
        canonicalize_name(Requirement(text).name)
        for requirements in PYPROJECT["project"]["optional-dependencies"].values()
        for text in requirements
    }
    assert not installed & ((extras - set(locked)) | {"pip", "setuptools", "wheel"}), "dev extras or tools"


def test_messenger_is_imported_from_the_venv_not_the_source_tree(image: Image) -> None:
    modules = ", ".join(PACKAGES)
    code = f"import {modules}; print('\\n'.join(m.__file__ for m in ({modules},)))"
    result = image.run(image.python, "-c", code)
    assert result.returncode == 0, result.stderr
    for path in map(Path, result.stdout.split()):
        assert path.is_relative_to(image.site_packages), path
        assert not path.is_relative_to(ROOT)


def test_every_module_of_the_wheel_imports(image: Image) -> None:
    # a module whose dependency is missing from the lock fails here even if no command imports it
    code = f"""
import importlib, pkgutil, sys, traceback
failed = []
for top in {PACKAGES!r}:
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if ".migrations" in info.name:
            continue  # alembic's env.py runs only under alembic; db upgrade covers them
        try:
            importlib.import_module(info.name)
        except Exception:
            failed.append(info.name + ": " + traceback.format_exc(limit=1))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    result = image.run(image.python, "-c", code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_carries_every_file_of_the_packages(image: Image) -> None:
    """Modules, migrations, the migration template, py.typed, static assets: whatever sits in a
    package directory of the source is installed."""
    missing = []
    for top in PACKAGES:
        for path in (image.context / top).rglob("*"):
            relative = path.relative_to(image.context)
            in_package = all(
                (image.context / parent / "__init__.py").exists() for parent in relative.parents[:-1]
            )
            if path.is_file() and in_package and not (image.site_packages / relative).is_file():
                missing.append(str(relative))
    assert not missing, f"not in the wheel: {missing}"


# --- what the image runs ---


@pytest.mark.parametrize("role", ROLES, ids=" ".join)
def test_each_command_answers_help(image: Image, role: list[str]) -> None:
    result = image.messenger(*role, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: messenger {' '.join(role)}")


def _tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def _migrated_to(database: Path) -> str:
    with sqlite3.connect(database) as connection:
        [(revision,)] = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return str(revision)


def test_migrations_run_on_a_fresh_sqlite_file(image: Image, tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    result = image.messenger("db", "upgrade", env={"MESSENGER_DATABASE_URL": f"sqlite:///{database}"})
    assert result.returncode == 0, result.stderr
    assert set(Base.metadata.tables) <= _tables(database)
    head = ScriptDirectory(str(ROOT / "messenger" / "migrations")).get_current_head()
    assert _migrated_to(database) == head


def test_the_default_database_lands_in_the_workdir(image: Image) -> None:
    # `messenger serve` in the image: sqlite:///var/messenger.db under WORKDIR, which the user owns
    result = image.messenger("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert set(Base.metadata.tables) <= _tables(image.workdir / "var" / "messenger.db")


@pytest.fixture
def api(image: Image, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    database = tmp_path / "api.db"
    env = image.env | {
        "MESSENGER_ENVIRONMENT": "development",
        "MESSENGER_DATABASE_URL": f"sqlite:///{database}",
        "MESSENGER_REDIS_URL": REDIS_URL,
        "MESSENGER_API_PORT": str(_free_port()),
        "MESSENGER_INTERNAL_PORT": str(_free_port()),
    }
    migrated = image.run(str(image.venv / "bin" / "messenger"), "db", "upgrade", env=env)
    assert migrated.returncode == 0, migrated.stderr
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [str(image.venv / "bin" / "messenger"), "api"],
        cwd=image.workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, env
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _healthz(port: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
    except httpx.HTTPError:
        return None


def test_api_answers_health_and_the_healthcheck_and_stops_on_sigterm(
    image: Image, api: tuple[subprocess.Popen[bytes], dict[str, str]], tmp_path: Path
) -> None:
    proc, env = api
    public, internal = env["MESSENGER_API_PORT"], env["MESSENGER_INTERNAL_PORT"]
    deadline = time.monotonic() + 60
    while _healthz(public) != 200:
        assert proc.poll() is None, (tmp_path / "api.log").read_text(errors="replace")
        assert time.monotonic() < deadline, "messenger api: no 200 from /healthz within 60 s"
        time.sleep(0.2)
    assert _healthz(internal) == 200
    # the chat app from the web stage (here its stub) at /, as MESSENGER_WEB_DIR points to it
    assert "<title>stub</title>" in httpx.get(f"http://127.0.0.1:{public}/", timeout=5).text

    # the image's HEALTHCHECK, with the role's environment (the internal port when set)
    probe = image.messenger("probe", env=env)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert image.messenger("probe", f"http://127.0.0.1:{public}/healthz", env=env).returncode == 0

    proc.send_signal(signal.SIGTERM)  # docker stop
    assert proc.wait(timeout=30) == 0, (tmp_path / "api.log").read_text(errors="replace")
    assert image.messenger("probe", env=env).returncode != 0  # nothing answers any more
