"""An event's identity is its producer's source and id, never a file name: a re-sent or renamed file bills
nothing twice, two suppliers' files of the same name do not collide, a file naming no source is refused,
and the same identity with other content is a recorded conflict (both databases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.billing.ledger import ingest_file
from tasks.errors import InputError
from tasks.schema import usage_conflicts, usage_events


def event(event_id: str, **changes: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "customer": "acme",
        "project": "llm",
        "supplier": "homelab",
        "gpu_type": "a100",
        "gpu_count": 1,
        "start": "2026-05-01T10:00:00Z",
        "end": "2026-05-01T11:00:00Z",
        **changes,
    }


def write(path: Path, *events: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def count(engine: sa.Engine, table: sa.Table = usage_events) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_file_that_names_no_source_is_refused_whole(engine: sa.Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "usage.jsonl", event("1", source="feed"), event("2"))
    with pytest.raises(InputError) as refused:
        ingest_file(engine, path)
    assert str(refused.value) == (
        f"usage file {path}: line 2 names no source and none was given: name the system that produced the "
        "events (a `source` column, or --source), so a re-sent file is recognised"
    )
    assert count(engine) == 0


def test_a_resent_or_renamed_file_bills_nothing_twice(engine: sa.Engine, tmp_path: Path) -> None:
    batch = [event(str(i)) for i in range(10)]
    first = ingest_file(engine, write(tmp_path / "usage.jsonl", *batch), source="supplier-a")
    again = ingest_file(engine, write(tmp_path / "usage-resend.jsonl", *batch), source="supplier-a")
    assert (first.inserted, again.inserted, again.duplicates, again.conflicts) == (10, 0, 10, 0)
    assert count(engine) == 10


def test_two_suppliers_files_of_one_name_do_not_collide(engine: sa.Engine, tmp_path: Path) -> None:
    a = ingest_file(engine, write(tmp_path / "a" / "usage.jsonl", event("1", source="supplier-a")))
    b = ingest_file(
        engine, write(tmp_path / "b" / "usage.jsonl", event("1", source="supplier-b", gpu_count=96))
    )
    assert (a.inserted, b.inserted, b.duplicates) == (1, 1, 0)
    assert count(engine) == 2


def test_same_identity_other_content_is_a_recorded_conflict(engine: sa.Engine, tmp_path: Path) -> None:
    ingest_file(engine, write(tmp_path / "first.jsonl", event("1"), event("2")), source="feed")
    path = write(
        tmp_path / "second.jsonl",
        event("1"),  # the same event again: a duplicate
        event("2", gpu_count=2),  # other content: a conflict against the ledger
        event("3"),
        event("3", customer="beta"),  # other content within the file: a conflict too
        event("4", gpu_type="tpu"),
    )
    summary = ingest_file(engine, path, source="feed")
    assert (summary.rows, summary.inserted, summary.duplicates, summary.conflicts, summary.quarantined) == (
        5,
        1,
        1,
        2,
        1,
    )
    assert summary.rows == summary.inserted + summary.duplicates + summary.conflicts + summary.quarantined
    with engine.connect() as connection:
        kept = connection.execute(sa.select(usage_conflicts).order_by(usage_conflicts.c.line)).all()
        held = connection.execute(
            sa.select(usage_events.c.gpu_count).where(usage_events.c.event_id == "2")
        ).one()
    assert [(k.line, k.event_id) for k in kept] == [(2, "2"), (4, "3")]
    assert kept[0].differences == "ledger: gpu_count 1 -> 2"
    assert kept[1].differences == "line 3: customer acme -> beta"
    assert '"gpu_count": 2' in kept[0].raw
    assert held.gpu_count == 1  # the ledger keeps what it billed; the conflict is for a person to settle
