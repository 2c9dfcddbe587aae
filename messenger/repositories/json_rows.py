"""Many rows bound as one JSON parameter and read back as a table inside the statement.

PyMySQL escapes every parameter in Python, and SQLAlchemy handles each row of a multi-row
INSERT or each value of an IN list on its own: a fan-out page of a thousand recipients spent
most of its database time there. One JSON array is one parameter; MariaDB (``JSON_TABLE``) and
SQLite (``json_each``) turn it back into rows, which the statement joins or inserts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy.orm import Session

#: An id column, compared with the tables' ids (case-sensitive, as migration 0002 made them).
ID = "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
BIGINT = "BIGINT"
#: (sender, client id) pairs: how a send is looked up by the id its sender gave it.
CLIENT_ID_PAIR = (("sender", ID), ("client_msg_id", ID))

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def is_mysql(session: Session) -> bool:
    return session.get_bind().dialect.name in ("mysql", "mariadb")


def table(session: Session, param: str, columns: Sequence[tuple[str, str]]) -> str:
    """A FROM item ``j`` with ``columns`` (name, MariaDB type) read from the JSON array bound as
    ``:param`` (see :func:`dumps`): one element per row, the value itself when there is one
    column, else an array of the columns' values in order."""
    paths = ["$"] if len(columns) == 1 else [f"$[{i}]" for i in range(len(columns))]
    if is_mysql(session):
        cols = ", ".join(
            f"{name} {sql_type} PATH '{path}'" for (name, sql_type), path in zip(columns, paths, strict=True)
        )
        return f"JSON_TABLE(:{param}, '$[*]' COLUMNS ({cols})) AS j"
    values = ", ".join(
        f"{'value' if path == '$' else f'json_extract(value, {path!r})'} AS {name}"
        for (name, _), path in zip(columns, paths, strict=True)
    )
    return f"(SELECT {values} FROM json_each(:{param})) AS j"  # noqa: S608 - names, not values


def dumps(rows: Sequence[object]) -> str:
    """The JSON array to bind for :func:`table`."""
    return _dumps(list(rows))
