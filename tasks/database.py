"""The ledger database: one engine per URL per process, migrated once per process.

Flows used to open an engine, and run Alembic's upgrade, in every task (up to six per billing run). Now
`connect(url)` hands out the same engine for the same URL; the first call creates the database's folder
(SQLite) and applies the migrations. `forget(url)` closes one (tests whose database is dropped call it), and
`dispose_all()` every pool at the process's exit.

SQLite: one writer at a time. The file is in WAL mode, so readers never wait for a writer nor block one, and
a writer waits its turn for up to SQLITE_WAIT_S (a full rollup of 300k events holds the write lock about
9 s here; sqlite3's default of 5 s made an ingest during it fail with "database is locked").
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("ledger_migrations")
SQLITE_WAIT_S = 300

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def connect(url: str) -> sa.Engine:
    """The engine on an up-to-date ledger (migrations applied once); the URL is never logged."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = _sqlite(url) if url.startswith("sqlite") else sa.create_engine(url, future=True)
            migrate(engine)
            _engines[url] = engine
        return engine


def _sqlite(url: str) -> sa.Engine:
    engine = sa.create_engine(url, future=True, connect_args={"timeout": SQLITE_WAIT_S})

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_connection, _record) -> None:  # noqa: ANN001 - sqlite3's connection
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        # A bulk ingest updates five indexes of usage_events: 2 MB of page cache (the default) thrashes.
        dbapi_connection.execute("PRAGMA cache_size=-262144")  # KiB: 256 MiB at most, used as needed
        dbapi_connection.execute("PRAGMA temp_store=MEMORY")  # sorts of a conflict check

    return engine


def migrate(engine: sa.Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def insert_rows(connection: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Many rows into `table` inside the connection's transaction. On PostgreSQL by COPY: executemany sent
    a statement per row, 5 s of a 1 M-event rollup's 160,000 daily rows."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
    listed = ", ".join(connection.dialect.identifier_preparer.quote(name) for name in names)
    statement = f"COPY {table.name} ({listed}) FROM STDIN"
    with connection.connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[name] for name in names])


def forget(url: str) -> None:
    """Closes and forgets one URL's engine (its database is about to be dropped or replaced)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def dispose_all() -> None:
    """Closes every engine's connections and forgets them (the next connect migrates again)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


atexit.register(dispose_all)
