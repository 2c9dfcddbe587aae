"""Query plans of the repositories' real statements, on MariaDB and SQLite.

:func:`capture` records every statement a block of repository code sends (through SQLAlchemy's
``before_cursor_execute``), with its parameters; :meth:`Captured.plans` asks the database how it
runs each one (``EXPLAIN`` on MariaDB, ``EXPLAIN QUERY PLAN`` on SQLite), and on MariaDB
:meth:`Captured.reads` counts the index and table rows the block actually read (the session's
``Handler_read_*`` counters). A plan test holds both against a table with a skewed history, so it
fails when the intended index is not used or when the rows read grow with that history.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import UniqueConstraint, event
from sqlalchemy.orm import Session

from messenger.models import Base
from messenger.repositories import json_rows

#: what a plan line says of one table access: (table or alias, index or None for a scan, detail)
Access = tuple[str, str | None, str]

_READS = ("first", "key", "last", "next", "prev", "rnd", "rnd_next")


def _handler_reads(session: Session) -> int:
    rows = session.connection().exec_driver_sql("SHOW SESSION STATUS LIKE 'Handler_read%%'")
    counts = {name.lower(): int(value) for name, value in rows}
    return sum(counts[f"handler_read_{r}"] for r in _READS)


@dataclass
class Captured:
    session: Session
    statements: list[tuple[str, Any]] = field(default_factory=list)
    handler_reads: int | None = None

    def plans(self) -> list[tuple[str, list[Access]]]:
        """Each captured query or write, with the table accesses of its plan."""
        return [(sql, self._explain(sql, params)) for sql, params in self.statements if _explainable(sql)]

    def reads(self) -> int:
        """Rows MariaDB read (index entries and table rows) while the block ran."""
        assert self.handler_reads is not None, "rows read are counted on MariaDB only"
        return self.handler_reads

    def _explain(self, sql: str, params: Any) -> list[Access]:
        cursor = self.session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if json_rows.is_mysql(self.session):
                cursor.execute(f"EXPLAIN {sql}", params)
                names = [d[0] for d in cursor.description]
                accesses = []
                for row in cursor.fetchall():
                    r = dict(zip(names, row, strict=True))
                    if r["table"] is None:
                        continue
                    scan = r["type"] in ("ALL", "index") and r["table"] != "j"
                    key = None if scan else (r["key"] or "")
                    accesses.append((str(r["table"]), key, f"{r['type']} key={r['key']} rows={r['rows']}"))
                return accesses
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            accesses = [_sqlite_access(detail) for *_, detail in cursor.fetchall()]
            return [(t, _sqlite_index_name(cursor, i), d) for t, i, d in accesses if t]
        finally:
            cursor.close()


_SQLITE = re.compile(
    r"^(SEARCH|SCAN) (\S+)(?: USING (?:COVERING )?INDEX (\S+)| USING (INTEGER )?PRIMARY KEY)?"
)


def _sqlite_access(detail: str) -> Access:
    m = _SQLITE.match(detail)
    if not m:
        return ("", None, detail)
    verb, table, index, _ = m.groups()
    if index is None and "PRIMARY KEY" in detail:
        index = "PRIMARY"
    if verb == "SCAN" and table not in ("j", "json_each", "CONSTANT"):
        # a scan is a plan that grows with the table, unless it is the JSON rows themselves
        return (table, None, detail)
    return (table, index or "", detail)


def _sqlite_index_name(cursor: Any, index: str | None) -> str | None:
    """SQLite names the index of a PRIMARY KEY or UNIQUE constraint ``sqlite_autoindex_T_N``: give
    it the name MariaDB gives it (``PRIMARY``, or the constraint's name in the models)."""
    if not index or not index.startswith("sqlite_autoindex_"):
        return index
    table = index.removeprefix("sqlite_autoindex_").rsplit("_", 1)[0]
    origin = {row[1]: row[3] for row in cursor.execute(f"PRAGMA index_list({table})").fetchall()}
    if origin.get(index) == "pk":
        return "PRIMARY"
    columns = [row[2] for row in cursor.execute(f"PRAGMA index_info({index})").fetchall()]
    for constraint in Base.metadata.tables[table].constraints:
        if isinstance(constraint, UniqueConstraint) and [c.name for c in constraint.columns] == columns:
            return str(constraint.name)
    return index


def _explainable(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper()
    return head in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


@contextmanager
def capture(session: Session) -> Iterator[Captured]:
    """Record the statements ``session`` sends inside the block (and, on MariaDB, the rows read)."""
    captured = Captured(session)
    mysql = json_rows.is_mysql(session)
    if mysql:
        # SHOW STATUS reads rows itself: measure what two of them cost and take it off
        first = _handler_reads(session)
        overhead = _handler_reads(session) - first
        before = _handler_reads(session)
    connection = session.connection()

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        captured.statements.append((statement, parameters[0] if many else parameters))

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield captured
    finally:
        event.remove(connection, "before_cursor_execute", record)
    if mysql:
        captured.handler_reads = _handler_reads(session) - before - overhead


def assert_plans(
    captured: Captured,
    expected: dict[str, str],
    *,
    max_reads: int | None = None,
    tables: set[str] | None = None,
    every: str | None = None,
) -> None:
    """Every access to a table named in ``expected`` uses that index (``PRIMARY`` for the primary
    key), each of them is accessed at least once, nothing is scanned whole, and (on MariaDB) the
    block read at most ``max_reads`` rows. ``tables``: only these accesses count (SQLite lists the
    foreign-key lookups an INSERT into a parent table may need with its plan). ``every``: the
    index every table access (the JSON rows aside) must use, whatever its alias."""
    plans = captured.plans()
    assert plans, "no statement was captured"
    seen: set[str] = set()
    shown = "\n".join(f"{sql}\n    {accesses}" for sql, accesses in plans)
    for _sql, accesses in plans:
        for table, index, detail in accesses:
            if tables is not None and table not in tables:
                continue
            assert index is not None, f"{table} is scanned whole ({detail}) in:\n{shown}"
            if every is not None and table not in ("j", "json_each"):
                assert index == every, (
                    f"{table} read through {index!r} ({detail}), not {every!r}, in:\n{shown}"
                )
            if table in expected:
                seen.add(table)
                assert index == expected[table], (
                    f"{table} read through {index!r} ({detail}), not {expected[table]!r}, in:\n{shown}"
                )
    assert seen == set(expected), f"never accessed: {set(expected) - seen} in:\n{shown}"
    if max_reads is not None and captured.handler_reads is not None:
        assert captured.handler_reads <= max_reads, (
            f"read {captured.handler_reads} rows (at most {max_reads} expected) in:\n{shown}"
        )
