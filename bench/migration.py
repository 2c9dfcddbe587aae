"""``python -m bench.migration``: how long a schema migration takes on a real-size database, and
whether the product's reads and writes go on meanwhile.

    python -m bench seed --database-url mysql+pymysql://root@127.0.0.1:3306/messenger_seed_mig
    python -m bench.migration --database-url mysql+pymysql://root@127.0.0.1:3306/messenger_seed_mig \\
        --start 0004

It brings the database down to ``--start`` (timed too: downgrades are migrations as well), then
upgrades it to ``--to`` (default ``head``) while a probe thread keeps doing what a handler and
the API do to the tables being changed, one operation after another on a connection of its own:
store a message, move its conversation, read a history page. An online migration lets every
probe operation through in milliseconds; one that locks a table shows as a long gap. The probe's
statements use only columns every revision has.

Prints the times and the probe's latencies; ``--json`` writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from bench.suite import p50_p99
from messenger.db import alembic_config, create_db_engine, migrate

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/messenger_seed_mig"


@dataclass
class Probe:
    """Operations done while the migration ran, and how long each took (ms)."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, engine: Engine) -> None:
        sender, recipient = f"probe-{uuid.uuid4().hex[:8]}", f"probe-{uuid.uuid4().hex[:8]}"
        with engine.begin() as conn:
            for uid in (sender, recipient):
                conn.execute(
                    text("INSERT INTO users (id, role, created_at) VALUES (:id, 'member', UTC_TIMESTAMP(6))"),
                    {"id": uid},
                )
            conn.execute(
                text(
                    "INSERT INTO conversations (owner_id, peer_id, last_message_id)"
                    " VALUES (:a, :b, 0), (:b, :a, 0)"
                ),
                {"a": sender, "b": recipient},
            )
        n = 0
        while not self.stop.is_set():
            n += 1
            t0 = time.perf_counter()
            try:
                with engine.begin() as conn:
                    message_id = conn.execute(
                        text(
                            "INSERT INTO messages (sender_id, recipient_id, client_msg_id, body, sent_at,"
                            " blocked) VALUES (:s, :r, :c, 'probe', UTC_TIMESTAMP(6), 0) RETURNING id"
                        ),
                        {"s": sender, "r": recipient, "c": f"probe-{n}"},
                    ).scalar_one()
                    conn.execute(
                        text(
                            "UPDATE conversations SET last_message_id = :id"
                            " WHERE (owner_id, peer_id) IN ((:s, :r), (:r, :s))"
                        ),
                        {"id": message_id, "s": sender, "r": recipient},
                    )
                    conn.execute(
                        text(
                            "SELECT id FROM messages WHERE sender_id = :s AND recipient_id = :r"
                            " ORDER BY id DESC LIMIT 50"
                        ),
                        {"s": sender, "r": recipient},
                    ).all()
            except Exception as exc:  # counted and shown: the probe goes on
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            self.latencies_ms.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.migration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", default=DEFAULT_URL)
    p.add_argument(
        "--start", default="0004", help="revision to bring the database down to first (default 0004)"
    )
    p.add_argument("--to", default="head", help="revision to upgrade to, timed (default head)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    engine = create_db_engine(args.database_url)
    with engine.connect() as conn:
        messages = conn.execute(text("SELECT COUNT(*) FROM messages")).scalar_one()
    print(f"{args.database_url}: {messages:,} messages, at revision {revision(engine)}", flush=True)
    t0 = time.monotonic()
    command.downgrade(alembic_config(engine), args.start)
    downgrade_s = time.monotonic() - t0
    print(f"downgrade to {args.start}: {downgrade_s:,.1f} s", flush=True)

    probe = Probe()
    thread = threading.Thread(target=probe.run, args=(engine,), name="probe", daemon=True)
    thread.start()
    time.sleep(1.0)  # the probe's own baseline before the migration starts
    baseline = len(probe.latencies_ms)
    t0 = time.monotonic()
    migrate(engine, args.to)
    upgrade_s = time.monotonic() - t0
    during = probe.latencies_ms[baseline:]
    p50, p99 = p50_p99(during)
    probe.stop.set()
    thread.join(30)
    figures = {
        "database_url": engine.url.render_as_string(hide_password=True),
        "messages": messages,
        "downgrade_to": args.start,
        "downgrade_s": round(downgrade_s, 1),
        "upgrade_to": revision(engine),
        "upgrade_s": round(upgrade_s, 1),
        "probe_ops_during_upgrade": len(during),
        "probe_p50_ms": _ms(p50),
        "probe_p99_ms": _ms(p99),
        "probe_max_ms": _ms(max(during, default=None)),
        "probe_errors": probe.errors[:10],
        "probe_error_count": len(probe.errors),
    }
    print(f"upgrade to {figures['upgrade_to']}: {upgrade_s:,.1f} s")
    print(
        f"probe (store a message, move its conversation, read a page) during the upgrade: "
        f"{len(during):,} operations, p50 {figures['probe_p50_ms']} ms, p99 {figures['probe_p99_ms']} ms, "
        f"max {figures['probe_max_ms']} ms, {len(probe.errors)} errors"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    engine.dispose()
    return 0 if not probe.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
