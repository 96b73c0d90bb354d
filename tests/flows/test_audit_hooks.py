"""Every flow run is audited (start, end, trigger, redacted parameters, customer text as sha256 and length).
A failed run's alert comes from the server's automation (tests/flows/test_platform.py), not from the hook,
so it is sent once, and also for runs killed outright."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from blocks.alert_routes import AlertRoutes
from blocks.ledger import LedgerDatabase
from flows.ingest_usage import ingest_usage
from tasks.audit import AuditQuery, query
from tasks.database import connect
from tasks.errors import InputError
from tests.standins.receivers import http_receiver


def test_runs_are_audited_and_the_hook_sends_no_alert(
    tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    LedgerDatabase(url=url).save("audit-test", overwrite=True)
    monkeypatch.setenv("GPUFLOWS_AUDIT_LEDGER", "audit-test")
    monkeypatch.setenv("GPUFLOWS_ALERT_ROUTES", "audit-test")
    usage = tmp_path / "usage.jsonl"
    usage.write_text(
        json.dumps({"source": "test-feed", "event_id": "e1", "customer": "acme", "project": "p",
                    "supplier": "s", "gpu_type": "a100", "gpu_count": 1, "start": "2026-05-01T10:00:00Z",
                    "end": "2026-05-01T11:00:00Z"}) + "\n"
    )  # fmt: skip
    with http_receiver() as receiver:
        AlertRoutes(
            sms=[f"json://127.0.0.1:{receiver.port}/sms"], im=[f"json://127.0.0.1:{receiver.port}/im"]
        ).save("audit-test", overwrite=True)
        ingest_usage(usage, ledger="audit-test")
        assert receiver.received == []
        with pytest.raises(InputError):
            ingest_usage(tmp_path / "missing.jsonl", ledger="audit-test")
        assert receiver.received == []  # the server's automation alerts, not the hook
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


def test_customer_text_is_fingerprinted_not_recorded() -> None:
    from flows.audit_hooks import fingerprinted

    prompt = "Summarise our confidential merger memo " * 50
    recorded = fingerprinted({"prompt": prompt, "instructions": "be brief", "config": {"note": "x" * 300},
                              "first_day": "2024-11-15", "server": "default"})  # fmt: skip
    assert recorded["prompt"] == {"sha256": hashlib.sha256(prompt.encode()).hexdigest(), "chars": len(prompt)}
    assert recorded["instructions"]["chars"] == 8 and "be brief" not in json.dumps(recorded)
    assert recorded["config"]["note"]["chars"] == 300
    assert (recorded["first_day"], recorded["server"]) == ("2024-11-15", "default")
