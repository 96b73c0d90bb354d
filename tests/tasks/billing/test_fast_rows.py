"""The ingest's fast path: the lean row parser agrees with `parse_event` on every row it accepts and passes
every other row to it; orjson reads what json reads; a batch staged in many chunks on the second thread
counts, dedups, records conflicts and rolls back exactly as one chunk would (both databases)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import tasks.billing.ledger as ledger
from tasks.billing.files import read_rows
from tasks.billing.ledger import DEFAULT_GPU_TYPES, ingest_file, parse_event, staged
from tasks.billing.rows import RowParser
from tasks.schema import ingest_batches, usage_conflicts, usage_events

# Per field: values a producer writes (first, drawn most of the time), then the edges either path must judge.
VALUES = {
    "source": (["feed", "supplier-a", 7], ["", None, " feed", "fe\x00ed"]),
    "event_id": (["e-1", "42", 42, "é-ünï", "a b"], ["", "x" * 201, "tab\there", 2**70, True, None]),
    "customer": (["acme", "ACME", "x" * 200], [" acme ", None, "\u00a0acme", "acme\x7f", ""]),
    "project": (["llm", "p"], ["", None, ["list"], {"a": 1}]),
    "job": ([None, "", "train"], [3.5, " train"]),
    "supplier": (["homelab"], ["", None]),
    "node": ([None, "n1", ""], [" n1", False]),
    "gpu_type": (["a100", "A100", "H100"], ["tpu", " a100", None, ""]),
    "gpu_count": (
        [1, 2, "0.5", 0.25, "1.0", 1024, "1E-7", "0.333333333333"],
        [0, -1, 1025, "a few", True, None, 1e9, "Infinity", "NaN", float("inf"), "9" * 50],
    ),
    "start": (
        ["2026-05-01T10:00:00Z", "2026-05-01T10:00:00+00:00", "2026-05-01T10:00:00.25Z"],
        [
            "2026-05-01T12:00:00+02:00",
            "2026-05-01T10:00:00",
            " 2026-05-01T10:00:00Z",
            "2014-12-31T23:59:59Z",
            "2015-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "yesterday",
            None,
            5,
        ],
    ),  # fmt: skip
    "end": (
        [None, "", "2026-05-01T11:00:00Z"],
        [
            "2026-05-01T10:00:00Z",
            "2026-05-01T09:00:00Z",
            "2026-06-01T10:00:00Z",
            "2026-06-01T10:00:01Z",
            "2026-05-01T11:00:00.5+00:00",
            "2026-05-01T13:00:00+01:00",
            7,
        ],
    ),  # fmt: skip
    "duration_seconds": ([3600, 1, 2678400], [None, 0, -5, 2678401, "3600", 90.5, True, 1e20]),
}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record = {}
    for name, (usual, edges) in VALUES.items():
        pick = draw(st.integers(0, 39))
        if pick == 0:
            continue  # absent
        if pick == 1:
            record[name] = draw(st.text(max_size=6))
        else:
            record[name] = draw(st.sampled_from(usual if pick > 4 else edges))
    return record


@settings(max_examples=3000, deadline=None)
@given(record=records(), default=st.sampled_from(["", "cli-source"]))
def test_the_fast_path_accepts_only_what_parse_event_accepts_and_stages_it_the_same(
    record: dict[str, Any], default: str
) -> None:
    fast = RowParser(default, DEFAULT_GPU_TYPES)
    row = fast.parse(record)
    try:
        event = parse_event(record, default, DEFAULT_GPU_TYPES)
    except ValueError:
        assert row is None  # the long way words the reason
        return
    if row is not None:
        assert row == staged(event)


def test_the_fast_path_takes_the_common_rows() -> None:
    """What the fast path is for: a producer's usual rows do not go the long way."""
    fast = RowParser("", DEFAULT_GPU_TYPES)
    common = {
        "source": "feed", "event_id": 17, "customer": "acme", "project": "llm", "supplier": "homelab",
        "gpu_type": "H100", "gpu_count": "0.5", "start": "2026-05-01T10:00:00Z", "duration_seconds": 3600,
    }  # fmt: skip
    assert fast.parse(common) == (
        "feed", "17", "acme", "llm", "", "homelab", "", "h100", "0.5", "2026-05-01 10:00:00.000000",
        "2026-05-01 11:00:00.000000", "2026-05-01", "2026-05-01", 1_800_000_000,
    )  # fmt: skip
    assert fast.parse({**common, "end": "2026-05-01T12:00:00Z"})[10] == "2026-05-01 12:00:00.000000"
    assert fast.parse({**common, "start": "2026-05-01T12:00:00+02:00"}) is None  # the long way: converted


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.booleans()))
def test_rows_read_as_json_reads_them(tmp_path_factory: pytest.TempPathFactory, value: object) -> None:
    """orjson reads the common row; an integer past 64 bits (which it reads as a float) is read by json."""
    path = tmp_path_factory.mktemp("rows") / "usage.jsonl"
    line = json.dumps({"event_id": value, "gpu_count": value})
    path.write_text(line + "\n")
    [(_, _, record, problem)] = list(read_rows(path))
    expected = json.loads(line)
    assert problem is None and record == expected
    assert [type(v) for v in record.values()] == [type(v) for v in expected.values()]


def test_an_event_id_past_64_bits_keeps_every_digit(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    big = 123456789012345678901234567890
    path.write_text(
        f'{{"source": "feed", "event_id": {big}, "customer": "acme", "project": "llm", "supplier": "s", '
        '"gpu_type": "a100", "gpu_count": 1, "start": "2026-05-01T10:00:00Z", "duration_seconds": 60}\n'
    )
    assert ingest_file(engine, path).inserted == 1
    with engine.connect() as connection:
        assert connection.execute(sa.select(usage_events.c.event_id)).scalar_one() == str(big)


def usage(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def event(i: int, **changes: object) -> dict[str, Any]:
    return {
        "source": "feed", "event_id": f"e{i}", "customer": f"c{i % 3}", "project": "llm",
        "supplier": "homelab", "gpu_type": "a100", "gpu_count": 1, "start": "2026-05-01T10:00:00Z",
        "duration_seconds": 60 + i, **changes,
    }  # fmt: skip


def test_a_batch_in_many_chunks_counts_and_conflicts_as_one(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "CHUNK_ROWS", 7)  # 60 new events: nine chunks on the staging thread
    rows = [event(i) for i in range(60)]
    rows += [event(5), event(50), event(12, gpu_count=2), {"event_id": "bad"}]  # dups, a conflict, a bad row
    first = ingest_file(engine, usage(tmp_path / "a.jsonl", rows))
    assert (first.rows, first.inserted, first.duplicates, first.conflicts, first.quarantined) == (
        64,
        60,
        2,
        1,
        1,
    )
    # Again, with three events changed in three different chunks and one new at the end.
    again = [event(i) for i in range(60)]
    for i in (3, 30, 58):
        again[i] = event(i, customer="someone-else")
    again.append(event(60))
    second = ingest_file(engine, usage(tmp_path / "b.jsonl", again))
    assert (second.rows, second.inserted, second.duplicates, second.conflicts) == (61, 1, 57, 3)
    with engine.connect() as connection:
        recorded = connection.execute(
            sa.select(usage_conflicts.c.line, usage_conflicts.c.event_id, usage_conflicts.c.raw)
            .where(usage_conflicts.c.batch_id == second.batch_id)
            .order_by(usage_conflicts.c.line)
        ).all()
        held = connection.execute(
            sa.select(sa.func.count()).where(usage_events.c.customer == "someone-else")
        ).scalar_one()
    assert [(line, event_id) for line, event_id, _ in recorded] == [(4, "e3"), (31, "e30"), (59, "e58")]
    assert all('"someone-else"' in raw for _, _, raw in recorded)  # the bytes as sent, read again
    assert held == 0  # a conflict never replaces what was billed


def test_a_failure_in_a_later_chunk_leaves_nothing(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "CHUNK_ROWS", 5)
    real, calls = ledger.stage_and_insert, []

    def third_fails(connection: sa.Connection, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("connection lost in the third chunk")
        return real(connection, *args)

    monkeypatch.setattr(ledger, "stage_and_insert", third_fails)
    with pytest.raises(RuntimeError, match="third chunk"):
        ingest_file(engine, usage(tmp_path / "a.jsonl", [event(i) for i in range(23)]))
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(ingest_batches)).scalar_one() == 0
        assert connection.execute(sa.select(sa.func.count()).select_from(usage_events)).scalar_one() == 0


def test_staged_times_are_utc_whatever_the_offset_sent(engine: sa.Engine, tmp_path: Path) -> None:
    rows = [event(1, start="2026-05-01T12:00:00+02:00"), event(2)]
    assert ingest_file(engine, usage(tmp_path / "a.jsonl", rows)).inserted == 2
    with engine.connect() as connection:
        starts = connection.execute(
            sa.select(usage_events.c.start_at).order_by(usage_events.c.event_id)
        ).all()
    assert [ledger.as_utc(s) for (s,) in starts] == [datetime(2026, 5, 1, 10, tzinfo=UTC)] * 2


def test_a_file_rewritten_during_its_ingest_never_lends_a_conflict_another_rows_bytes(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_file(engine, usage(tmp_path / "a.jsonl", [event(1), event(2)]))
    path = usage(tmp_path / "b.jsonl", [event(1, customer="changed"), event(2, customer="changed")])
    real, reads = ledger.read_rows, []

    def rewritten_before_the_second_read(p: Path) -> Any:
        reads.append(p)
        if len(reads) == 2:  # the conflicts' bytes are read again: someone rewrote the file meanwhile
            usage(p, [event(7, customer="changed"), event(2, customer="changed")])
        return real(p)

    monkeypatch.setattr(ledger, "read_rows", rewritten_before_the_second_read)
    summary = ingest_file(engine, path)
    assert summary.conflicts == 2 and len(reads) == 2
    with engine.connect() as connection:
        raws = connection.execute(
            sa.select(usage_conflicts.c.event_id, usage_conflicts.c.raw).order_by(usage_conflicts.c.line)
        ).all()
    assert raws[0][0] == "e1" and '"e1"' in raws[0][1] and '"e7"' not in raws[0][1]  # kept as JSON
    assert raws[1] == ("e2", json.dumps(event(2, customer="changed")))  # still the bytes as sent
