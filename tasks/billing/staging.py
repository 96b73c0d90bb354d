"""A batch's events reach the ledger a chunk at a time, each chunk one statement: the chunk travels as one
JSON array (orjson, in C), the database unpacks it (SQLite's json_each, PostgreSQL's jsonb_array_elements) and
one INSERT … SELECT … ON CONFLICT DO NOTHING adds the new events. Only when some were held already are they
compared with what was sent, in SQL, so only a conflict's two versions come back to Python.

The chunks run on a second thread while the first still reads the file. One statement per chunk keeps that
thread out of the GIL for the whole insert, so reading and writing share the two cores; row-by-row staging
(executemany, COPY's write_row) took the GIL back for every row. Row-at-a-time inserts with RETURNING
managed about 3,000 events/s; see the README's ingest benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from tasks.billing.rows import Staged
from tasks.schema import STAGED_COLUMNS, usage_events

COLUMNS = STAGED_COLUMNS
COMPARED = ("customer", "project", "job", "supplier", "node", "gpu_type", "gpu_count", "start_at", "end_at")
CHUNK_ROWS = 50_000  # rows per statement: large enough that a statement's fixed cost is noise


@dataclass(frozen=True, slots=True)
class Inserted:
    inserted: int  # events new to the ledger
    known: int  # events the ledger already held (from an earlier batch, or a concurrent one)
    differing: list[tuple[int, dict[str, Any]]]  # (position in the batch, the held event) where they differ


def _fields(dialect: str) -> list[str]:
    """The staged columns out of one JSON array element `value`, typed as the ledger stores them."""
    if dialect == "sqlite":  # the columns' affinities convert as a bound parameter's would
        return [f"json_extract(value, '$[{i}]')" for i in range(len(COLUMNS))]
    casts = {"gpu_count": "numeric", "start_day": "date", "end_day": "date", "gpu_microseconds": "bigint"}
    return [
        f"((value->>{i})::timestamp AT TIME ZONE 'UTC')"
        if name in ("start_at", "end_at")
        else f"(value->>{i})::{casts[name]}"
        if name in casts
        else f"(value->>{i})"
        for i, name in enumerate(COLUMNS)
    ]


def _elements(dialect: str) -> str:
    """The chunk's elements as rows of (value, key), key counting their order."""
    if dialect == "sqlite":
        return "json_each(:chunk)"
    return "jsonb_array_elements(CAST(:chunk AS jsonb)) WITH ORDINALITY AS j(value, key)"


def stage_and_insert(
    connection: sa.Connection, rows: Sequence[Staged], batch_id: int, now: datetime
) -> Inserted:
    """rows: staged tuples (tasks/billing/rows.Staged), distinct by (source, event id). Inserts the new
    ones as batch_id; positions in the result count from 0 in `rows`."""
    if not rows:
        return Inserted(0, 0, [])
    dialect = connection.dialect.name
    fields, elements = _fields(dialect), _elements(dialect)
    chunk = orjson.dumps(rows).decode()
    if dialect == "postgresql":  # compiling these plain statements cost more than running them
        connection.execute(sa.text("SET LOCAL jit = off"))
    listed = ", ".join(COLUMNS)
    # WHERE true: SQLite's parser needs it between a SELECT and its ON CONFLICT.
    inserted = connection.execute(
        sa.text(
            f"INSERT INTO usage_events ({listed}, batch_id, ingested_at) SELECT {', '.join(fields)}, :batch, "
            f":now FROM {elements} WHERE true ON CONFLICT (source, event_id) DO NOTHING"
        ).bindparams(sa.bindparam("now", type_=usage_events.c.ingested_at.type)),
        {"chunk": chunk, "batch": batch_id, "now": now},
    ).rowcount
    # Rows are distinct by identity, so every one not inserted is held by the ledger (an earlier batch, or
    # a concurrent one that committed first): only those are compared, and only a conflict comes back.
    known = len(rows) - inserted
    differing = []
    if known:
        sent = dict(zip(COLUMNS, fields, strict=True))
        held = [f"u.{name}" for name in COMPARED]
        differs = " OR ".join(f"u.{name} <> {sent[name]}" for name in COMPARED)
        offset = 0 if dialect == "sqlite" else 1  # json_each's key counts from 0, ORDINALITY from 1
        differing = [
            (int(row[0]) - offset, dict(zip(COMPARED, row[1:], strict=True)))
            for row in connection.execute(
                sa.text(
                    f"SELECT key, {', '.join(held)} FROM {elements} JOIN usage_events u "
                    f"ON u.source = {sent['source']} AND u.event_id = {sent['event_id']} "
                    f"AND u.batch_id <> :batch WHERE {differs} ORDER BY key"
                ).columns(  # typed as the ledger's columns: SQLite hands back text otherwise
                    sa.column("key", sa.BigInteger), *(sa.column(n, usage_events.c[n].type) for n in COMPARED)
                ),
                {"chunk": chunk, "batch": batch_id},
            )
        ]
    return Inserted(inserted, known, differing)


class Stager:
    """Stages a batch chunk by chunk, in order, on one worker thread; `close` waits for every chunk and sums
    them. Leaving the block on an error waits for the chunk in flight (the transaction then rolls back)."""

    def __init__(
        self,
        connection: sa.Connection,
        batch_id: int,
        now: datetime,
        stage: Callable[[sa.Connection, Sequence[Staged], int, datetime], Inserted] = stage_and_insert,
    ) -> None:
        self._connection, self._batch_id, self._now, self._stage = connection, batch_id, now, stage
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gpuflows-staging")
        self._chunks: list[tuple[int, Future[Inserted]]] = []
        self._sent = 0

    def __enter__(self) -> Stager:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, rows: Sequence[Staged]) -> None:
        for _, chunk in self._chunks[-2:]:  # a failed chunk fails the batch now, not at the file's end
            if chunk.done() and (error := chunk.exception()) is not None:
                raise error
        if rows:
            future = self._pool.submit(self._stage, self._connection, rows, self._batch_id, self._now)
            self._chunks.append((self._sent, future))
            self._sent += len(rows)

    def close(self) -> Inserted:
        """The whole batch's result; positions count from the batch's first row."""
        inserted = known = 0
        differing: list[tuple[int, dict[str, Any]]] = []
        for offset, future in self._chunks:
            chunk = future.result()
            inserted, known = inserted + chunk.inserted, known + chunk.known
            differing += [(offset + pos, held) for pos, held in chunk.differing]
        return Inserted(inserted, known, differing)
