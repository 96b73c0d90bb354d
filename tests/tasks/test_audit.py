"""The audit trail: redaction, append-only on both databases, and billing changes recorded atomically
with the change itself."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, SecretStr

from blocks.rate_card import DEFAULT_RATES
from tasks.audit import AuditQuery, query, redact
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import RateMissingError, close_through, rates_from, rollup_days
from tasks.schema import audit_log

SECRET = "hunter2-9c1f"  # pragma: allowlist secret


class Config(BaseModel):
    ollama_host: str
    api_token: str
    webhook: SecretStr


def test_redaction_masks_secret_keys_values_and_url_credentials() -> None:
    parameters = {
        "prompt": f"see http://bob:{SECRET}@gpu-box:11434/api and more",
        "config": Config(ollama_host=f"http://bob:{SECRET}@gpu-box", api_token=SECRET, webhook=SECRET),
        "nested": [{"password": SECRET}, {"plain": "kept"}],
        "auth_string": f"admin:{SECRET}",
    }
    stored = json.dumps(redact(parameters))
    assert SECRET not in stored
    assert "http://***@gpu-box" in stored and '"plain": "kept"' in stored


def test_the_trail_is_append_only(engine: sa.Engine) -> None:
    from tasks.audit import record

    with engine.begin() as connection:
        record(connection, "test", {"n": 1})
    for statement in (audit_log.update().values(kind="changed"), audit_log.delete()):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(statement)
    assert [r["kind"] for r in query(engine, AuditQuery())] == ["test"]


def test_billing_changes_are_recorded_with_the_change(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    record = {"source": "test-feed", "event_id": "e1", "customer": "acme", "project": "p", "supplier": "s",
              "gpu_type": "a100", "gpu_count": 1, "start": "2026-05-01T10:00:00Z",
              "end": "2026-05-01T12:00:00Z"}  # fmt: skip
    path.write_text(json.dumps(record) + "\n")
    ingest_file(engine, path)
    rates = rates_from(DEFAULT_RATES)
    rollup_days(engine, date(2026, 5, 1), date(2026, 5, 1), rates)
    with pytest.raises(RateMissingError):  # a failed rollup writes nothing, its record included
        rollup_days(engine, date(2026, 5, 1), date(2026, 5, 1), [r for r in rates if r.gpu_type != "a100"])
    close_through(engine, date(2026, 5, 1), rates)
    trail = list(reversed(query(engine, AuditQuery())))
    assert [r["kind"] for r in trail] == ["ingest", "rollup", "close"]
    assert trail[0]["detail"]["inserted"] == 1 and trail[1]["detail"]["customer_cost"] == "2.80"
    assert trail[2]["detail"]["day"] == "2026-05-01"
    assert [r["kind"] for r in query(engine, AuditQuery(kind="rollup"))] == ["rollup"]
