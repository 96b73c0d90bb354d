"""Billing rollup at ledger scale: 10 million events shaped like the real Alibaba GenAI request trace.

Targets (issue 4): a full rollup of the ledger in <= 30 s, and the hourly rollup after one new hour of
usage in <= 1 s whatever the ledger size, on SQLite and on PostgreSQL.

Shape: the real trace (../shared/data/alibaba-genai-lora, else the committed slice) is replayed in
24-day cycles until the ledger spans about a year; each cycle has its own customers (the trace's groups
with a cycle suffix: customers come and go), and each real request becomes a burst of requests in the
following hour with the trace's own run times. Suppliers and GPU types are assigned per customer; one
request in ten holds half a GPU. Events are bulk-loaded (COPY on PostgreSQL, executemany on SQLite), not
through `ingest_file`, whose per-row validation is not what is measured here; the new hour is ingested
through `ingest_file`, as production does.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from blocks.rate_card import DEFAULT_RATES
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import billed_total, close_through, rates_from, rollup_days
from tasks.database import connect

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "data" / "alibaba-genai-lora" / "lora_request_trace.csv"
SLICE = ROOT / "tests" / "data" / "usage" / "lora_request_trace_slice.csv"
SUPPLIERS = [("homelab", "rtx5090"), ("alibaba-genai", "a10"), ("edge-co", "rtx4090"),
             ("dc-west", "a100"), ("dc-east", "h100"), ("render-farm", "l40s")]  # fmt: skip
SECONDARY_INDEXES = (  # the first two: one on each database (migration 0011)
    "ix_usage_events_day_groups",
    "ix_usage_events_start_day",
    "ix_usage_events_batch",
    "ix_usage_events_multi_day",
)
RATES = rates_from(DEFAULT_RATES)
LAST_DAY = date(2026, 11, 22)  # the ledger ends the day before "yesterday"; the new hour is today's first


def real_trace() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(seconds since the trace's first midnight, group index, model index, run seconds), days spanned."""
    path = TRACE if TRACE.is_file() else SLICE
    with path.open(newline="") as handle:
        rows = [
            r for r in csv.DictReader(handle) if r["exec_time_seconds"] and float(r["exec_time_seconds"]) > 0
        ]
    starts = [datetime.strptime(r["gmt_create"], "%Y-%m-%d %H:%M:%S") for r in rows]
    origin = min(starts).replace(hour=0, minute=0, second=0)
    groups = {g: i for i, g in enumerate(sorted({r["groupId"] for r in rows}))}
    models = {m: i for i, m in enumerate(sorted({r["checkpoint_model_version_id"] for r in rows}))}
    offsets = np.array([(s - origin).total_seconds() for s in starts], dtype=np.int64)
    return (
        offsets,
        np.array([groups[r["groupId"]] for r in rows], dtype=np.int64),
        np.array([models[r["checkpoint_model_version_id"]] for r in rows], dtype=np.int64),
        np.array([float(r["exec_time_seconds"]) for r in rows], dtype=np.int64),
        int(offsets.max() // 86400) + 1,
    )


def synthesize(total: int, seed: int = 7) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of events (column arrays), in time order, `total` in all, ending on LAST_DAY."""
    offsets, group, model, run_s, trace_days = real_trace()
    cycles = max(1, math.ceil(365 / trace_days))
    burst = max(1, round(total / (len(offsets) * cycles)))
    first = datetime.combine(LAST_DAY - timedelta(days=cycles * trace_days - 1), datetime.min.time())
    rng = np.random.default_rng(seed)
    produced, event_id = 0, 0
    for cycle in range(cycles):
        n = min(len(offsets) * burst, total - produced)
        if n <= 0:
            return
        base = np.repeat(np.arange(len(offsets)), burst)[:n]
        start = offsets[base] + cycle * trace_days * 86400 + rng.integers(0, 3600, n)
        order = np.argsort(start, kind="stable")
        base, start = base[order], start[order]
        duration = run_s[rng.integers(0, len(run_s), n)]
        customer = group[base] * 100 + cycle
        yield {
            "source": "bench",
            "event_id": np.arange(event_id, event_id + n),
            "customer": customer,
            "project": model[base],
            "supplier": customer % len(SUPPLIERS),
            "half": rng.random(n) < 0.1,
            "start": start,
            "duration": duration,
            "first": np.datetime64(first, "s"),
        }
        produced += n
        event_id += n


def rows(chunk: dict[str, np.ndarray], batch: int) -> Iterator[tuple]:
    start = chunk["first"] + chunk["start"].astype("timedelta64[s]")
    end = start + chunk["duration"].astype("timedelta64[s]")
    start_s = np.datetime_as_string(start, unit="s")
    end_s = np.datetime_as_string(end, unit="s")
    start_day = np.datetime_as_string(start, unit="D")
    end_day = np.datetime_as_string(end - np.timedelta64(1, "s"), unit="D")
    micro = chunk["duration"] * 1_000_000 // np.where(chunk["half"], 2, 1)
    for i in range(len(start_s)):
        supplier, gpu = SUPPLIERS[chunk["supplier"][i]]
        yield (
            "bench",
            f"e{chunk['event_id'][i]}",
            f"G{chunk['customer'][i]:06d}",
            f"M{chunk['project'][i]:04d}",
            "txt_2_img:succeed",
            supplier,
            "",
            gpu,
            "0.5" if chunk["half"][i] else "1",
            start_s[i].replace("T", " ") + ".000000",
            end_s[i].replace("T", " ") + ".000000",
            batch,
            start_s[i].replace("T", " ") + ".000000",
            start_day[i],
            end_day[i],
            int(micro[i]),
        )


COLUMNS = (
    "source, event_id, customer, project, job, supplier, node, gpu_type, gpu_count, start_at, end_at, "
    "batch_id, ingested_at, start_day, end_day, gpu_microseconds"
)


def bulk_load(engine: sa.Engine, total: int) -> float:
    """Load `total` events; returns seconds. Secondary indexes are rebuilt after the load, as a bulk
    import would."""
    began = time.perf_counter()
    with engine.begin() as connection:
        definitions = {
            name: sql
            for name, sql in connection.execute(
                sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
                if engine.dialect.name == "sqlite"
                else sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_events'")
            )
            if name in SECONDARY_INDEXES
        }
        for name in definitions:
            connection.execute(sa.text(f"DROP INDEX {name}"))
        batch = connection.execute(
            sa.text(
                "INSERT INTO ingest_batches (file, source, rows, inserted, duplicates, quarantined,"
                " created_at) VALUES ('bench', 'bench', :n, :n, 0, 0, :now) RETURNING id"
            ),
            {"n": total, "now": datetime.now(UTC)},
        ).scalar_one()
    if engine.dialect.name == "sqlite":
        raw = sqlite3.connect(engine.url.database)
        raw.execute("PRAGMA journal_mode=WAL")
        with raw:
            for chunk in synthesize(total):
                raw.executemany(
                    f"INSERT INTO usage_events ({COLUMNS}) VALUES ({', '.join('?' * 16)})", rows(chunk, batch)
                )
        raw.close()
    else:
        raw_connection = engine.raw_connection()
        try:
            cursor = raw_connection.cursor()
            for chunk in synthesize(total):
                buffer = io.StringIO()
                for row in rows(chunk, batch):
                    buffer.write("\t".join(map(str, row)) + "\n")
                with cursor.copy(f"COPY usage_events ({COLUMNS}) FROM STDIN") as copy:
                    copy.write(buffer.getvalue())
            raw_connection.commit()
        finally:
            raw_connection.close()
    with engine.begin() as connection:
        for sql in definitions.values():
            connection.execute(sa.text(sql))
        connection.execute(sa.text("ANALYZE"))
    return time.perf_counter() - began


def new_hour(directory: Path, events: int) -> Path:
    """One hour of new usage (today 00:00-01:00) as a JSONL file for `ingest_file`."""
    rng = np.random.default_rng(11)
    offsets, group, model, run_s, _ = real_trace()
    today = LAST_DAY + timedelta(days=2)
    path = directory / "new-hour.jsonl"
    with path.open("w") as handle:
        for i in range(events):
            j = int(rng.integers(0, len(group)))
            start = datetime.combine(today, datetime.min.time(), UTC) + timedelta(
                seconds=int(rng.integers(0, 3600))
            )
            supplier, gpu = SUPPLIERS[int(group[j]) % len(SUPPLIERS)]
            record = {
                "source": "bench",
                "event_id": f"hour-{i}",
                "customer": f"G{group[j] * 100 + 99:06d}",
                "project": f"M{model[j]:04d}",
                "supplier": supplier,
                "gpu_type": gpu,
                "gpu_count": 1,
                "start": start.isoformat(),
                "duration_seconds": int(run_s[int(rng.integers(0, len(run_s)))]),
            }
            handle.write(json.dumps(record) + "\n")
    return path


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str | None]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir}/ledger.db"
        return
    from tests.postgres import fresh_database, require_postgres

    try:
        require_postgres()
    except BaseException as exc:  # pytest's skip is a BaseException: no PostgreSQL here
        if isinstance(exc, KeyboardInterrupt):
            raise
        yield None
        return
    with fresh_database("gpuflows_billing_bench") as dsn:
        yield dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def measure(kind: str, total: int) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="gpuflows-billing-bench-") as tmp,
        database(kind, Path(tmp)) as url,
    ):
        if url is None:
            return {"database": kind, "events": total, "skipped": "no PostgreSQL at 127.0.0.1:5432"}
        engine = connect(url)
        load_s = bulk_load(engine, total)
        first, last = LAST_DAY - timedelta(days=400), LAST_DAY
        began = time.perf_counter()
        full = rollup_days(engine, first, last, RATES)
        full_s = time.perf_counter() - began
        again = rollup_days(engine, first, last, RATES)
        assert (again.customer_cost, again.supplier_payout) == (full.customer_cost, full.supplier_payout)
        began = time.perf_counter()
        close_through(engine, LAST_DAY - timedelta(days=1), RATES)  # a year of periods closed at once
        close_s = time.perf_counter() - began
        hour = new_hour(Path(tmp), events=max(1, total // (365 * 24)))
        began = time.perf_counter()
        ingested = ingest_file(engine, hour)
        ingest_s = time.perf_counter() - began
        today = LAST_DAY + timedelta(days=2)
        began = time.perf_counter()
        hourly = rollup_days(engine, today - timedelta(days=1), today, RATES)  # what the hourly run does
        hour_s = time.perf_counter() - began
        total_billed = billed_total(engine, first, today)
        engine.dispose()
        return {
            "database": kind,
            "events": total,
            "load_s": round(load_s, 1),
            "full_rollup_s": round(full_s, 2),
            "days": full.recomputed_days,
            "customer_rows": full.customer_rows,
            "billed": f"{total_billed} USD",
            "close_year_s": round(close_s, 2),
            "new_hour_events": ingested.inserted,
            "ingest_hour_s": round(ingest_s, 2),
            "hourly_rollup_s": round(hour_s, 3),
            "hourly_cost": f"{hourly.customer_cost} USD",
        }


def report(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> str:
    lines = [
        "### Billing rollup (10 M events shaped like the Alibaba GenAI trace)",
        "",
        "| database | events | bulk load s | full rollup s | days | customer rows | billed "
        "| close of a year s | new hour: events | ingest s | hourly rollup s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("sqlite", "postgresql"):
        for total in sizes:
            r = measure(kind, total)
            print(json.dumps(r), file=sys.stderr, flush=True)
            if "skipped" in r:
                lines.append(f"| {kind} | {total:,} | skipped: {r['skipped']} |||||||||")
                continue
            lines.append(
                f"| {kind} | {total:,} | {r['load_s']} | **{r['full_rollup_s']}** | {r['days']} | "
                f"{r['customer_rows']:,} | {r['billed']} | {r['close_year_s']} | {r['new_hour_events']} | "
                f"{r['ingest_hour_s']} | **{r['hourly_rollup_s']}** |"
            )
    lines += ["", "Targets: full rollup <= 30 s, hourly rollup after one new hour <= 1 s at any ledger size."]
    return "\n".join(lines)


if __name__ == "__main__":
    sizes = tuple(int(s) for s in sys.argv[1:]) or (1_000_000, 10_000_000)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(report(sizes))
