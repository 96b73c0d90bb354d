"""A known secret planted in every place the platform keeps one (the ledger's database URL, every Apprise
URL), then every flow runs, one of them failing: the secret is in no log, artifact, flow-run state,
exception text, report, statement or audit record. (The API auth string: tests/flows/test_api_auth.py.)"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from blocks.alert_routes import AlertRoutes
from blocks.budgets import Budget, Budgets
from blocks.ledger import LedgerDatabase
from blocks.rate_card import GpuRate, RateCard
from flows.billing_rollup import billing_rollup
from flows.decompose import decompose
from flows.ingest_usage import ingest_usage
from flows.train import train_model
from flows.usage_forecast import usage_forecast
from tasks.audit import AuditQuery, query
from tasks.billing.rollup import RateMissingError
from tasks.database import connect
from tasks.decomposition.plan import AgentConfig
from tests.builders import marked_document
from tests.conftest import MODEL
from tests.flows.test_train import CHAT, config_for
from tests.postgres import fresh_database
from tests.standins.ollama import StandinOllama
from tests.standins.receivers import http_receiver

CANARY = "canary-5e1f0c9d2b7a"  # pragma: allowlist secret


@pytest.mark.postgres
def test_a_planted_secret_never_leaks(
    tmp_path: Path,
    prefect_server: str,
    tiny_qwen: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        fresh_database("gpuflows_canary") as dsn,
        http_receiver() as receiver,
        StandinOllama(models={MODEL: 32768}) as ollama,
    ):
        # Trust auth ignores the password, so the planted one works and is sent on every connection.
        url = dsn.replace("postgresql://postgres@", f"postgresql+psycopg://postgres:{CANARY}@", 1)
        LedgerDatabase(url=url).save("canary", overwrite=True)
        hook = f"json://127.0.0.1:{receiver.port}/hook/{CANARY}?token={CANARY}"
        AlertRoutes(sms=[hook], im=[hook], email=[hook]).save("canary", overwrite=True)
        RateCard().save("canary", overwrite=True)
        Budgets(budgets=[Budget(customer="acme", monthly_amount=Decimal("1"))]).save("canary", overwrite=True)
        monkeypatch.setenv("GPUFLOWS_AUDIT_LEDGER", "canary")
        monkeypatch.setenv("GPUFLOWS_ALERT_ROUTES", "canary")
        blocks = {"ledger": "canary", "rate_card": "canary", "budgets": "canary", "alert_routes": "canary"}
        reports = tmp_path / "reports"
        errors: list[str] = []

        decompose(marked_document(12), AgentConfig(ollama_host=ollama.url, ollama_model=MODEL), server=None)
        usage = tmp_path / "usage.jsonl"
        usage.write_text(
            "".join(
                json.dumps({"source": "test-feed", "event_id": f"e{h}", "customer": "acme", "project": "p",
                            "supplier": "homelab", "gpu_type": "a100", "gpu_count": 1,
                            "start": f"2026-05-{d:02d}T{h:02d}:00:00Z",
                            "end": f"2026-05-{d:02d}T{h:02d}:45:00Z"}) + "\n"
                for d in range(1, 11) for h in range(0, 24, 3)
            )
        )  # fmt: skip
        ingest_usage(usage, ledger="canary")
        billing_rollup(date(2026, 5, 1), date(2026, 5, 10), statements_dir=reports / "statements", **blocks)
        usage_forecast(as_of=datetime(2026, 5, 11, tzinfo=UTC), reports_dir=reports / "forecast", **blocks)
        train_model(
            config_for(tmp_path, tiny_qwen, [json.dumps(CHAT)] * 8), gpu_type="rtx5090", ledger="canary"
        )
        RateCard(rates=[GpuRate(gpu_type="h100", customer_price="2.7", supplier_payout="1.9")]).save(
            "canary-broken", overwrite=True
        )
        with pytest.raises(RateMissingError) as failed:  # fails (its alert comes from the server)
            billing_rollup(date(2026, 5, 1), date(2026, 5, 12), **{**blocks, "rate_card": "canary-broken"})
        errors.append(str(failed.value))
        assert any(m["title"].startswith("Budget") for m in receiver.received)

        trail = query(connect(url), AuditQuery(limit=10_000))
        assert {r["kind"] for r in trail} >= {"flow-run-start", "flow-run-end", "ingest", "rollup"}
        places = {
            "logs": httpx.post(f"{prefect_server}/logs/filter", json={"limit": 200}).text,
            "artifacts": httpx.post(f"{prefect_server}/artifacts/filter", json={"limit": 200}).text,
            "flow runs": httpx.post(f"{prefect_server}/flow_runs/filter", json={"limit": 200}).text,
            "task runs": httpx.post(f"{prefect_server}/task_runs/filter", json={"limit": 200}).text,
            "exceptions": "\n".join(errors),
            "audit": json.dumps(trail, default=str),
            "python logging": "\n".join(r.getMessage() for r in caplog.records),
            "reports": "\n".join(p.read_text(errors="replace") for p in reports.rglob("*.csv")),
        }
    assert all(len(text) > 100 for name, text in places.items() if name != "exceptions"), (
        "places must be real"
    )
    leaked = [name for name, text in places.items() if CANARY in text]
    where = [f"{r.name}: {r.getMessage()[:300]}" for r in caplog.records if CANARY in r.getMessage()]
    assert leaked == [], where[:5]
