"""Alembic environment: the engine is handed in by :func:`messenger.db.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

from messenger.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("run migrations with `messenger db upgrade` or set sqlalchemy.url")
        engine = create_engine(url)
    # Alembic owns the transactions (one per migration), so that a migration can commit a long
    # backfill batch by batch (``autocommit_block``) instead of holding its locks to the end.
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported; run `messenger db upgrade`")
run_migrations_online()
