"""The usage ledger on SQLite and on PostgreSQL: one code path, dedup, quarantine, atomic batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tasks.billing.ledger import count_events, ingest_file, quarantined
from tasks.errors import InputError
from tasks.schema import ingest_batches, usage_events


def event(i: int, **overrides: Any) -> dict[str, Any]:
    return {
        "source": "test-feed",
        "event_id": f"evt-{i}",
        "customer": "acme",
        "project": "llm",
        "job": f"job-{i}",
        "supplier": "homelab",
        "node": "gpu-1",
        "gpu_type": "RTX5090",
        "gpu_count": 0.5,
        "start": "2026-05-01T10:00:00Z",
        "end": "2026-05-01T11:30:00+00:00",
        **overrides,
    }


def write_jsonl(path: Path, *records: Any) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_events_are_stored_with_fractional_gpus_and_utc_times(engine: sa.Engine, tmp_path: Path) -> None:
    summary = ingest_file(
        engine,
        write_jsonl(
            tmp_path / "a.jsonl",
            event(1),
            event(2, start="2026-05-01T12:00:00+02:00", end="2026-05-01T13:00:00+02:00"),
        ),
    )
    assert (summary.rows, summary.inserted, summary.duplicates, summary.quarantined) == (2, 2, 0, 0)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(usage_events).order_by(usage_events.c.event_id)).all()
    assert [r.gpu_type for r in rows] == ["rtx5090", "rtx5090"]
    assert str(rows[0].gpu_count).rstrip("0") == "0.5"
    assert rows[1].start_at.replace(tzinfo=None).hour == 10  # 12:00+02:00 is 10:00 UTC


def test_ten_percent_duplicates_are_ignored_and_counted(engine: sa.Engine, tmp_path: Path) -> None:
    records = [event(i) for i in range(100)] + [event(i) for i in range(0, 100, 10)]  # 10 % repeated
    first = ingest_file(engine, write_jsonl(tmp_path / "day1.jsonl", *records))
    assert (first.inserted, first.duplicates) == (100, 10)
    again = ingest_file(engine, write_jsonl(tmp_path / "day1-resent.jsonl", *records), source="day1.jsonl")
    assert (again.inserted, again.duplicates) == (0, 110)
    assert count_events(engine) == 100


def test_bad_rows_are_quarantined_with_their_reason(engine: sa.Engine, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        event(1),
        {k: v for k, v in event(2).items() if k != "end"} | {"duration_seconds": -60},
        event(3, gpu_type="tpu-v5"),
        event(4, customer=""),
        event(5, end="2026-05-01T09:00:00Z"),
        event(6, start="yesterday at noon"),
        event(7, start="2026-05-01T10:00:00"),
        "{not json",
    )
    summary = ingest_file(engine, path)
    assert (summary.inserted, summary.quarantined) == (1, 7)
    assert [(q["line"], q["reason"]) for q in quarantined(engine, summary.batch_id)] == [
        (2, "negative duration"),
        (3, "unknown GPU type 'tpu-v5'"),
        (4, "missing customer"),
        (5, "end before start"),
        (6, "unparsable time in start: 'yesterday at noon'"),
        (7, "start '2026-05-01T10:00:00' has no timezone (use UTC, e.g. 2026-05-01T10:00:00Z)"),
        (8, "invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
    ]
    assert quarantined(engine, summary.batch_id)[0]["raw"].startswith(
        '{"source": "test-feed", "event_id": "evt-2"'
    )


def test_csv_rows_are_read_with_their_line_numbers(engine: sa.Engine, tmp_path: Path) -> None:
    header = "event_id,customer,project,job,supplier,node,gpu_type,gpu_count,start,end"
    path = tmp_path / "usage.csv"
    path.write_text(
        f"{header}\nc1,acme,llm,j,homelab,gpu-1,h100,1,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z\n"
        "c2,acme,llm,j,homelab,gpu-1,h100,2,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,extra\n"
    )
    summary = ingest_file(engine, path, source="supplier-a")
    assert (summary.inserted, summary.quarantined) == (1, 1)
    assert (
        quarantined(engine)[0]["line"] == 3
        and "11 cells, the header has 10" in quarantined(engine)[0]["reason"]
    )


def test_a_batch_is_atomic(engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.billing.ledger as ledger

    def broken(*args: Any) -> int:
        raise RuntimeError("connection lost between writes")

    monkeypatch.setattr(ledger, "stage_and_insert", broken)
    with pytest.raises(RuntimeError):
        ingest_file(engine, write_jsonl(tmp_path / "a.jsonl", event(1), event(2, gpu_type="tpu")))
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(ingest_batches)).scalar_one() == 0
    assert quarantined(engine) == [] and count_events(engine) == 0


def test_migrations_are_idempotent(engine: sa.Engine) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tasks.database import MIGRATIONS, migrate

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    migrate(engine)  # a second upgrade of an up-to-date ledger changes nothing
    with engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM ledger_schema_version")).scalar_one()
        rollups = connection.execute(sa.text("SELECT count(*) FROM billing_customer_daily")).scalar_one()
    assert (version, rollups) == (head, 0)


def test_upgrading_a_populated_ledger_backfills_the_day_columns(engine: sa.Engine, tmp_path: Path) -> None:
    """Revision 0003 derives start_day, end_day and gpu_microseconds for events stored before it."""
    from alembic import command
    from alembic.config import Config

    from tasks.database import MIGRATIONS, migrate

    ingest_file(engine, write_jsonl(tmp_path / "a.jsonl", event(1, end="2026-05-02T00:30:00Z")))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    with engine.begin() as connection:  # an event written by the 0002 schema
        connection.execute(sa.text("DELETE FROM usage_events"))
        connection.execute(
            sa.text(
                "INSERT INTO usage_events (source, event_id, customer, project, job, supplier, node,"
                " gpu_type, gpu_count, start_at, end_at, batch_id, ingested_at)"
                " VALUES ('s', 'old', 'acme', 'llm', '', 'homelab', '', 'rtx5090', 0.5,"
                " :start, :end, 1, :start)"
            ),
            {"start": datetime(2026, 5, 1, 23, tzinfo=UTC), "end": datetime(2026, 5, 2, 0, 30, tzinfo=UTC)},
        )
    migrate(engine)  # what the next process's first connect() does
    with engine.connect() as connection:
        row = connection.execute(sa.select(usage_events)).one()
    assert (str(row.start_day), str(row.end_day), row.gpu_microseconds) == (
        "2026-05-01",
        "2026-05-02",
        2_700_000_000,  # 0.5 GPU x 1.5 h
    )


def test_an_unreadable_file_is_named(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="usage file .*absent.jsonl cannot be read"):
        ingest_file(engine, tmp_path / "absent.jsonl")


def test_a_real_request_trace_ingests_with_pending_requests_quarantined(
    engine: sa.Engine, tmp_path: Path
) -> None:
    from tasks.billing.trace_import import lora_trace_events

    trace = Path(__file__).parents[2] / "data" / "usage" / "lora_request_trace_slice.csv"
    events = list(lora_trace_events(trace, gpu_type="a10"))
    summary = ingest_file(engine, write_jsonl(tmp_path / "lora.jsonl", *events))
    pending = [e for e in events if e["job"].endswith(":pending")]
    assert summary.rows == len(events) == 321
    assert summary.quarantined == len(pending) > 0  # never ran: no model, no GPU time; kept, not dropped
    assert summary.inserted == len(events) - len(pending) and summary.duplicates == 0
    assert {q["reason"] for q in quarantined(engine)} == {"missing project"}
    with engine.connect() as connection:
        customers = connection.execute(
            sa.select(sa.func.count(sa.distinct(usage_events.c.customer)))
        ).scalar_one()
    assert customers > 20


def test_the_migrated_ledger_is_the_schema_the_code_writes(engine: sa.Engine) -> None:
    """Every revision together builds what tasks/schema.py declares: tables, columns, types, nullability.
    (Indexes are declared in the revisions only, for the queries that need them.)"""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tasks.schema import metadata

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        drift = [
            d
            for d in compare_metadata(context, metadata)
            if d[0] != "remove_index"
            and not (d[0] == "remove_table" and d[1].name == "ledger_schema_version")  # Alembic's own
        ]
    assert drift == []
