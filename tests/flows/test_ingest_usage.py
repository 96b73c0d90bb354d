"""The `ingest-usage` flow with its ledger block; the database URL is a Secret, never in an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from blocks.ledger import LedgerDatabase
from flows.ingest_usage import ingest_usage


def test_ingest_flow_writes_the_batch_and_an_artifact_without_the_url(
    tmp_path: Path, prefect_server: str
) -> None:
    url = f"sqlite:///{tmp_path}/secret-ledger-name.db"
    LedgerDatabase(url=url).save("test-ledger", overwrite=True)
    event = {
        "source": "test-feed",
        "event_id": "e1",
        "customer": "acme",
        "project": "llm",
        "supplier": "homelab",
        "gpu_type": "a100",
        "gpu_count": 2,
        "start": "2026-05-01T10:00:00Z",
        "duration_seconds": 5400,
    }
    path = tmp_path / "usage.jsonl"
    path.write_text(json.dumps(event) + "\n")
    summary = ingest_usage(path, ledger="test-ledger")
    assert (summary.inserted, summary.quarantined) == (1, 0)
    [artifact] = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["usage-ingest"]}}, "limit": 1},
    ).json()
    assert '"inserted": 1' in artifact["data"] and "secret-ledger-name" not in artifact["data"]
