"""Every flow run is audited (start, end, trigger, redacted parameters), and a failed run raises a
critical Apprise alert that reaches a real receiver on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blocks.alert_routes import AlertRoutes
from blocks.ledger import LedgerDatabase
from flows.ingest_usage import ingest_usage
from tasks.audit import AuditQuery, query
from tasks.errors import InputError
from tasks.ledger import connect
from tests.standins.receivers import http_receiver


def test_runs_are_audited_and_a_failure_alerts(
    tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    LedgerDatabase(url=url).save("audit-test", overwrite=True)
    monkeypatch.setenv("GPUFLOWS_AUDIT_LEDGER", "audit-test")
    monkeypatch.setenv("GPUFLOWS_ALERT_ROUTES", "audit-test")
    usage = tmp_path / "usage.jsonl"
    usage.write_text(
        json.dumps({"event_id": "e1", "customer": "acme", "project": "p", "supplier": "s", "gpu_type": "a100",
                    "gpu_count": 1, "start": "2026-05-01T10:00:00Z", "end": "2026-05-01T11:00:00Z"}) + "\n"
    )  # fmt: skip
    with http_receiver() as receiver:
        AlertRoutes(
            sms=[f"json://127.0.0.1:{receiver.port}/sms"], im=[f"json://127.0.0.1:{receiver.port}/im"]
        ).save("audit-test", overwrite=True)
        ingest_usage(usage, ledger="audit-test")
        assert receiver.received == []
        with pytest.raises(InputError):
            ingest_usage(tmp_path / "missing.jsonl", ledger="audit-test")
        titles = [m["title"] for m in receiver.received]
    assert len(titles) == 2 and all(t.startswith("Flow run failed: ingest-usage / ") for t in titles)
    assert "missing.jsonl cannot be read" in receiver.received[0]["message"]
    trail = list(reversed(query(connect(url), AuditQuery())))
    assert [(r["kind"], r["state"]) for r in trail] == [
        ("flow-run-start", "RUNNING"),
        ("ingest", None),
        ("flow-run-end", "COMPLETED"),
        ("flow-run-start", "RUNNING"),
        ("flow-run-end", "FAILED"),
    ]
    assert {r["trigger"] for r in trail if r["kind"].startswith("flow-run")} == {"direct"}
    assert trail[0]["detail"]["parameters"]["path"] == str(usage)
    assert trail[0]["flow_run_id"] == trail[2]["flow_run_id"] != trail[3]["flow_run_id"]
