"""The `billing-rollup` flow with its blocks on a real Prefect server: a table artifact, identical re-runs."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx

from blocks.alert_routes import AlertRoutes
from blocks.budgets import Budget, Budgets
from blocks.contacts import Contact, Contacts
from blocks.ledger import LedgerDatabase
from blocks.rate_card import RateCard
from flows.billing_rollup import billing_rollup
from tasks.billing.budgets import recorded_alerts
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import adjustment_rows
from tasks.billing.statements import safe_name
from tasks.database import connect
from tests.standins.receivers import http_receiver

BLOCKS = {"ledger": "rollup-test", "rate_card": "rollup-test", "budgets": "rollup-test"}


def usage(path: Path, event_id: str, start: str, end: str) -> Path:
    record = {
        "source": "test-feed",
        "event_id": event_id,
        "customer": "acme",
        "project": "llm",
        "supplier": "homelab",
        "gpu_type": "h100",
        "gpu_count": 1,
        "start": start,
        "end": end,
    }
    path.write_text(json.dumps(record) + "\n")
    return path


def test_rollup_flow_prices_the_ledger_and_reruns_identically(tmp_path: Path, prefect_server: str) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    LedgerDatabase(url=url).save("rollup-test", overwrite=True)
    RateCard().save("rollup-test", overwrite=True)
    Budgets().save("rollup-test", overwrite=True)
    events = tmp_path / "usage.jsonl"
    events.write_text(
        json.dumps(
            {
                "source": "test-feed",
                "event_id": "e1",
                "customer": "acme",
                "project": "llm",
                "supplier": "homelab",
                "gpu_type": "a100",
                "gpu_count": 1,
                "start": "2026-05-03T08:00:00Z",
                "end": "2026-05-03T10:30:00Z",
            }
        )
        + "\n"
    )
    ingest_file(connect(url), events)
    day = date(2026, 5, 3)
    statements = tmp_path / "statements"
    first = billing_rollup(day, day, **BLOCKS, statements_dir=statements)
    second = billing_rollup(day, day, **BLOCKS, statements_dir=statements)
    assert first.customer_cost == second.customer_cost == 3.5  # 2.5 GPU-h x 1.40 USD
    [artifact] = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["billing-rollup"]}}, "limit": 1},
    ).json()
    [row] = json.loads(artifact["data"])
    assert (row["customer"], row["month"], row["line"], row["gpu_hours"], row["amount"]) == (
        "acme",
        "2026-05",
        "usage",
        "2.500000",
        "3.50",
    )
    [payouts] = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["billing-payouts"]}}, "limit": 1},
    ).json()
    [paid] = json.loads(payouts["data"])
    assert (paid["supplier"], paid["amount"], paid["idle_gpu_hours"]) == ("homelab", "2.45", "")  # 2.5 x 0.98
    statement = statements / f"invoice-{safe_name('acme')}-2026-05-03-2026-05-03.csv"
    assert statement.read_text().splitlines() == [
        "customer,month,project,gpu_type,line,gpu_hours,amount,currency",
        "acme,2026-05,llm,a100,usage,2.500000,3.50,USD",
        "acme,total,,,,,3.50,USD",
    ]
    assert (statements / f"payout-{safe_name('homelab')}-2026-05-03-2026-05-03.csv").exists()


def test_daily_close_adjustments_and_budget_alerts_through_the_flow(
    tmp_path: Path, prefect_server: str
) -> None:
    """The close run freezes past days; later usage is an adjustment; the budget alert arrives once."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    LedgerDatabase(url=url).save("close-test", overwrite=True)
    RateCard().save("close-test", overwrite=True)
    Budgets(budgets=[Budget(customer="acme", monthly_amount="5.00")]).save("close-test", overwrite=True)
    engine = connect(url)
    ingest_file(engine, usage(tmp_path / "a.jsonl", "a", "2026-05-03T08:00:00Z", "2026-05-03T09:00:00Z"))
    with http_receiver() as receiver:
        AlertRoutes(
            sms=[f"json://127.0.0.1:{receiver.port}/sms"],
            im=[f"json://127.0.0.1:{receiver.port}/im"],
            email=[f"json://127.0.0.1:{receiver.port}/email"],
        ).save("close-test", overwrite=True)
        # acme hears its own budget alert too, on its own channels; the other customer hears nothing of it.
        Contacts(
            contacts=[Contact(kind="customer", id="acme"), Contact(kind="customer", id="other")],
            channels={
                "customer:acme": {"email": [f"json://127.0.0.1:{receiver.port}/acme-email"]},
                "customer:other": {"im": [f"json://127.0.0.1:{receiver.port}/other-im"]},
            },
        ).save("close-test", overwrite=True)
        blocks = {"ledger": "close-test", "rate_card": "close-test", "budgets": "close-test"}
        params = {
            **blocks,
            "alert_routes": "close-test",
            "contacts": "close-test",
            "statements_dir": tmp_path / "s",
        }
        may = (date(2026, 5, 1), date(2026, 5, 31))
        billing_rollup(*may, close=True, **params)  # closes every day up to two days ago (48 h grace)
        assert sorted(m["path"] for m in receiver.received) == ["/acme-email", "/email"]  # 50 %: info
        assert {m["title"] for m in receiver.received} == {"Budget 50% reached: acme (2026-05)"}
        receiver.received[:] = [m for m in receiver.received if m["path"] == "/email"]
        ingest_file(engine, usage(tmp_path / "b.jsonl", "b", "2026-05-03T10:00:00Z", "2026-05-03T11:00:00Z"))
        summary = billing_rollup(*may, close=True, **params)
        # May is closed: it bills its first hour still; the second is an adjustment on the first open day.
        assert (summary.recomputed_days, summary.customer_cost, summary.adjustments_cost) == (
            0,
            Decimal("2.70"),
            0,
        )
        assert [m["title"] for m in receiver.received] == ["Budget 50% reached: acme (2026-05)"]
    [adjustment] = adjustment_rows(engine, date(2026, 5, 1), date(2099, 12, 31))
    assert (adjustment["usage_day"], adjustment["customer_cost"], adjustment["final"]) == (
        date(2026, 5, 3),
        Decimal("2.70"),
        False,  # provisional on the first open day until that day closes
    )
    assert adjustment["billed_day"] > date(2026, 5, 31)
    assert [(r["threshold"], r["status"]) for r in recorded_alerts(engine)] == [(50, "sent")]
