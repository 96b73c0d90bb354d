"""Usage files written by someone else: whatever a row holds, that row is quarantined with its line, reason
and bytes (escaped), and the rest of the file is ingested; a CSV must start with a header of known columns
(both databases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.billing.ledger import ingest_file, quarantined
from tasks.errors import InputError
from tasks.schema import usage_events

GOOD = {
    "source": "supplier-a",
    "event_id": "ok-1",
    "customer": "acme",
    "project": "llm",
    "supplier": "homelab",
    "gpu_type": "a100",
    "gpu_count": 1,
    "start": "2026-05-01T10:00:00Z",
    "end": "2026-05-01T11:00:00Z",
}


def row(**changes: object) -> str:
    return json.dumps({**GOOD, "event_id": f"bad-{len(changes)}-{sorted(changes)}", **changes})


HOSTILE = [
    (row(duration_seconds="Infinity", end=None), "duration_seconds must be a finite number"),
    (row(duration_seconds=1e20, end=None), "duration_seconds 1E+20 is longer than 31 days"),
    (row(customer=["acme"]), "customer must be text, got list"),
    (row(start="10000-01-01T00:00:00Z"), "unparsable time in start"),
    (row(gpu_count="9" * 5000), "gpu_count is not a plausible number (5000 characters)"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "invalid JSON: too deeply nested or too long a number"),
    (row(event_id="nul\u0000byte"), "event_id contains a control character"),
    (row(event_id="x" * 201), "event_id is longer than 200 characters"),
    (row(gpu_count=1e9), "gpu_count 1000000000.0 is over the ledger's limit of 1024 per event"),
    (
        row(start="1970-01-01T00:00:00Z", end="1970-01-01T01:00:00Z"),
        "start '1970-01-01T00:00:00Z' is outside",
    ),
    (
        row(start="2006-03-01T00:00:00Z", end="2006-03-01T01:00:00Z"),
        "start '2006-03-01T00:00:00Z' is outside",
    ),
    (row(end="2026-07-01T11:00:00Z"), "the event lasts longer than 31 days"),
    (row(start="2099-01-01T00:00:00Z", end="2099-01-01T01:00:00Z"), "is outside the ledger's range"),
    (row(gpu_count=True), "gpu_count is not a number (got bool)"),
]


def test_every_hostile_row_is_quarantined_alone(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join([json.dumps(GOOD), *(text for text, _ in HOSTILE)]) + "\n")
    summary = ingest_file(engine, path)
    assert (summary.rows, summary.inserted, summary.quarantined) == (len(HOSTILE) + 1, 1, len(HOSTILE))
    kept = sorted(quarantined(engine, summary.batch_id), key=lambda r: r["line"])
    for (_, reason), record in zip(HOSTILE, kept, strict=True):
        assert reason in record["reason"], (record["line"], record["reason"])
    assert r"nul\u0000byte" in kept[6]["raw"]  # the row kept as it came


def test_a_binary_file_is_quarantined_line_by_line(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bytes(range(256)) + b"\n\xff\xfe\x00garbage\n")
    summary = ingest_file(engine, path)
    assert summary.inserted == 1 and summary.quarantined >= 2 and summary.rows == 1 + summary.quarantined
    reasons = {r["reason"].split(":")[0] for r in quarantined(engine, summary.batch_id)}
    assert reasons <= {"not UTF-8", "invalid JSON"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=2000), csv=st.booleans())
def test_rows_add_up_whatever_the_bytes(engine: sa.Engine, tmp_path: Path, payload: bytes, csv: bool) -> None:
    """rows = new + duplicates + quarantined, for any file, and nothing raises but a refused CSV header."""
    path = tmp_path / ("any.csv" if csv else "any.jsonl")
    header = b"source,event_id,customer,project,supplier,gpu_type,gpu_count,start,end\n"
    path.write_bytes((header if csv else b"") + payload)
    summary = ingest_file(engine, path)
    assert summary.rows == summary.inserted + summary.duplicates + summary.quarantined
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(usage_events)).scalar_one() >= 0


CSV_HEADER = "source,event_id,customer,project,supplier,gpu_type,gpu_count,start,end"
CSV_ROW = "supplier-a,c1,acme,llm,homelab,a100,1,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (CSV_ROW + "\n" + CSV_ROW.replace("c1", "c2") + "\n", "its first line is not a header"),
        (CSV_HEADER + ",notes\n" + CSV_ROW + ",hi\n", "unknown column(s) 'notes'"),
        ("source,event_id,customer\nsupplier-a,c1,acme\n", "missing column(s) project, supplier, gpu_type"),
        (CSV_HEADER + ",customer\n" + CSV_ROW + ",other\n", "column(s) customer appear more than once"),
    ],
)
def test_a_csv_without_a_proper_header_is_refused_whole(
    engine: sa.Engine, tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(text)
    with pytest.raises(InputError) as refused:
        ingest_file(engine, path)
    assert says in str(refused.value) and str(path) in str(refused.value) and "\n" not in str(refused.value)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(usage_events)).scalar_one() == 0


def test_csv_rows_that_are_not_utf8_or_hold_a_form_feed_are_handled_alone(
    engine: sa.Engine, tmp_path: Path
) -> None:
    path = tmp_path / "usage.csv"
    latin1 = CSV_ROW.replace("c1", "c2").replace("acme", "caf\xe9").encode("latin-1")
    feed = CSV_ROW.replace("c1", "c3").replace("llm", '"l\x0clm"').encode()
    path.write_bytes(b"\n".join([CSV_HEADER.encode(), CSV_ROW.encode(), latin1, feed, b""]))
    summary = ingest_file(engine, path)
    assert (summary.rows, summary.inserted, summary.quarantined) == (3, 1, 2)
    kept = sorted(quarantined(engine, summary.batch_id), key=lambda r: r["line"])
    assert [(r["line"], r["reason"]) for r in kept] == [
        (3, "not UTF-8"),
        (4, "project contains a control character"),
    ]
    assert kept[0]["raw"].startswith("supplier-a,c2,caf\\xe9") and "c1" not in kept[1]["raw"]
