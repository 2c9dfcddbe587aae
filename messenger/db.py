"""Engine, sessions and migrations for SQLite (embedded) and MariaDB (PyMySQL)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from messenger.exceptions import StoreUnavailable

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine tuned for the backend in ``url``; SQLite files get their folder created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "savepoint", _sqlite_begin_before_savepoint)
        return engine
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        parsed = parsed.set(query=query)
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_recycle", 3600)
        # As many pooled connections as the API's worker threads (anyio's default 40): a
        # connection beyond pool_size is closed when returned, and opening one costs a TLS
        # handshake attempt (PyMySQL's "preferred" SSL), which at 32 concurrent requests was a
        # third of the API's CPU. Connections are opened lazily, so an idle process holds few.
        kwargs.setdefault("pool_size", 40)
        kwargs.setdefault("max_overflow", 10)
    return create_engine(parsed, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while the handler writes; NORMAL sync is durable across app crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_before_savepoint(connection: Any, _name: str) -> None:
    # pysqlite opens a transaction only before INSERT/UPDATE/DELETE. A SAVEPOINT sent first
    # (users.ensure, blocks.block) would start a transaction of its own, and its RELEASE would
    # commit it in the middle of the unit of work: open the real transaction first.
    dbapi_connection = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commits on success, rolls back on error; DB outages become StoreUnavailable."""
    session = factory()
    try:
        yield session
        session.commit()
    except DBAPIError as exc:
        session.rollback()
        if exc.connection_invalidated or _is_operational(exc):
            raise StoreUnavailable(f"database unavailable: {exc.orig}") from exc
        raise
    except PoolTimeout as exc:  # every connection of the pool busy for its whole timeout
        session.rollback()
        raise StoreUnavailable("database busy: no connection free in time") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _is_operational(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, OperationalError)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; safe to run on every start)."""
    command.upgrade(alembic_config(engine), revision)
    logger.info("database schema at %s (%s)", revision, engine.url.render_as_string(hide_password=True))


@functools.cache
def head_revision() -> str | None:
    """The newest migration this code ships (read once: the files do not change while we run)."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def schema_behind(engine: Engine) -> str | None:
    """Why the schema is not at the newest migration (None when it is); connects once."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head_revision():
        return None
    return f"the schema is at {current or 'nothing'}, not {head_revision()}: run `messenger db upgrade`"
