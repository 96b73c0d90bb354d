"""A batch's events reach the ledger through a staging table, in bulk: COPY on PostgreSQL, one executemany on
SQLite; then one INSERT … SELECT … ON CONFLICT DO NOTHING adds the new ones, and the events the ledger already
held are compared with what was sent in SQL, so only a conflict's two versions come back to Python.

Row-at-a-time inserts with RETURNING managed about 3,000 events/s; see the README's ingest benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tasks.schema import STAGED_COLUMNS, usage_events, usage_staging

COLUMNS = STAGED_COLUMNS
COMPARED = ("customer", "project", "job", "supplier", "node", "gpu_type", "gpu_count", "start_at", "end_at")


@dataclass(frozen=True, slots=True)
class Staged:
    inserted: int  # events new to the ledger
    known: int  # events the ledger already held (from an earlier batch, or a concurrent one)
    differing: list[tuple[int, dict[str, Any]]]  # (position in the batch, the held event) where they differ


def _sqlite_rows(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Times as SQLAlchemy writes them in SQLite (2026-05-01 10:00:00.000000, UTC), so a re-sent event
    compares equal; numbers as text (the column's NUMERIC affinity stores them as numbers)."""
    out = []
    for pos, row in enumerate(rows):
        (*texts, count, start, end, start_day, end_day, micro) = row
        out.append(
            (pos, *texts, str(count), start.replace(tzinfo=None).isoformat(" ", "microseconds"),
             end.replace(tzinfo=None).isoformat(" ", "microseconds"), start_day.isoformat(),
             end_day.isoformat(), micro)
        )  # fmt: skip
    return out


def stage_and_insert(
    connection: sa.Connection, rows: Sequence[tuple[Any, ...]], batch_id: int, now: datetime
) -> Staged:
    """rows: tuples in COLUMNS order (times aware UTC). Inserts the new ones as batch_id."""
    if not rows:
        return Staged(0, 0, [])
    staging = usage_staging()
    staging.create(connection)
    columns = ", ".join(("pos", *COLUMNS))
    raw = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f"COPY usage_staging ({columns}) FROM STDIN") as copy:
            for pos, row in enumerate(rows):
                copy.write_row((pos, *row))
    else:
        raw.cursor().executemany(
            f"INSERT INTO usage_staging ({columns}) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
            _sqlite_rows(rows),
        )
    listed = ", ".join(COLUMNS)
    # WHERE true: SQLite's parser needs it between a SELECT and its ON CONFLICT.
    inserted = connection.execute(
        sa.text(
            f"INSERT INTO usage_events ({listed}, batch_id, ingested_at) SELECT {listed}, :batch, :now "
            "FROM usage_staging WHERE true ORDER BY pos ON CONFLICT (source, event_id) DO NOTHING"
        ).bindparams(sa.bindparam("now", type_=usage_events.c.ingested_at.type)),
        {"batch": batch_id, "now": now},
    ).rowcount
    s, u = staging.c, usage_events.c
    held = sa.and_(u.source == s.source, u.event_id == s.event_id, u.batch_id != batch_id)
    known = connection.execute(
        sa.select(sa.func.count()).select_from(staging.join(usage_events, held))
    ).scalar_one()
    differs = sa.or_(*(u[name] != s[name] for name in COMPARED))
    differing = [
        (row.pos, {name: row._mapping[u[name]] for name in COMPARED})
        for row in connection.execute(
            sa.select(s.pos, *(u[name] for name in COMPARED))
            .select_from(staging.join(usage_events, held))
            .where(differs)
            .order_by(s.pos)
        )
    ]
    staging.drop(connection)
    return Staged(inserted, known, differing)


def as_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in COLUMNS)


def normal_count(value: Any) -> Decimal:
    return Decimal(str(value)).normalize()
