"""Flow `ingest-usage`: load a JSONL or CSV file of GPU usage events into the ledger, as one atomic batch."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.audit_hooks import AUDITED
from flows.parameters import BlockName
from flows.resources import ledger_engine, prices
from tasks.billing.ledger import IngestSummary, ingest_file


def ingest(path: Path, source: str | None, engine: sa.Engine, gpu_types: frozenset[str]) -> IngestSummary:
    return ingest_file(engine, path, source, gpu_types)


ingest_task = task(ingest, name="ingest-file", cache_policy=NO_CACHE)


@flow(
    name="ingest-usage",
    flow_run_name="ingest-{path.name}",
    validate_parameters=True,
    **AUDITED,
)
def ingest_usage(
    path: Path,
    source: Annotated[str, Field(min_length=1, max_length=200)] | None = None,
    ledger: BlockName = "default",
    rate_card: BlockName = "default",
) -> IngestSummary:
    """Ingest usage events: duplicates (same source + event id) skipped and counted, bad rows quarantined
    with their reason, the whole batch written atomically.

    Args:
        path: A .jsonl or .csv file readable by the worker.
        source: The system that produced the events, for rows without a `source` column (with the event
            id, the identity that deduplicates); a file with neither is refused.
        ledger: Name of the LedgerDatabase block.
        rate_card: Name of the RateCard block: a GPU type it prices is accepted.
    """
    summary = ingest_task(path, source, ledger_engine(ledger), prices(rate_card).gpu_types)
    get_run_logger().info(
        "%s: %d rows, %d new, %d duplicates, %d conflicts, %d quarantined",
        path,
        summary.rows,
        summary.inserted,
        summary.duplicates,
        summary.conflicts,
        summary.quarantined,
    )
    create_table_artifact(
        key="usage-ingest",
        table=[
            {k: v for k, v in asdict(summary).items() if k != "reasons"} | {"reasons": str(summary.reasons)}
        ],
        description=f"batch {summary.batch_id}: {summary.inserted} new, {summary.quarantined} quarantined",
    )
    return summary
