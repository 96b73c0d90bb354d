"""The `billing-rollup` flow with its blocks on a real Prefect server: a table artifact, identical re-runs."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import httpx

from blocks.ledger import LedgerDatabase
from blocks.rate_card import RateCard
from flows.billing_rollup import billing_rollup
from tasks.ledger import connect, ingest_file


def test_rollup_flow_prices_the_ledger_and_reruns_identically(tmp_path: Path, prefect_server: str) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    LedgerDatabase(url=url).save("rollup-test", overwrite=True)
    RateCard().save("rollup-test", overwrite=True)
    events = tmp_path / "usage.jsonl"
    events.write_text(
        json.dumps(
            {
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
    first = billing_rollup(day, day, ledger="rollup-test", rate_card="rollup-test", statements_dir=statements)
    second = billing_rollup(
        day, day, ledger="rollup-test", rate_card="rollup-test", statements_dir=statements
    )
    assert first.customer_cost == second.customer_cost == 3.5  # 2.5 GPU-h x 1.40 USD
    [artifact] = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["billing-rollup"]}}, "limit": 1},
    ).json()
    [row] = json.loads(artifact["data"])
    assert (row["customer"], row["gpu_hours"], row["customer_cost"], row["margin"]) == (
        "acme",
        "2.500000",
        "3.50",
        "1.05",
    )
    assert (statements / "statement-acme-2026-05-03-2026-05-03.csv").read_text().splitlines() == [
        "customer,day,project,gpu_type,gpu_hours,customer_cost,currency",
        "acme,2026-05-03,llm,a100,2.500000,3.50,USD",
        "acme,total,,,,3.50,USD",
    ]
