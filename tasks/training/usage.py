"""The training flow's own GPU usage, written to the ledger as a UsageEvent like any other usage.

One event per flow-run attempt (event id `<flow run id>:<attempt>`), so a retried run bills each attempt's
GPU time once and a re-recorded attempt is a counted duplicate, never a second charge.
"""

from __future__ import annotations

import socket
from collections.abc import Collection
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from tasks.billing.ledger import DEFAULT_GPU_TYPES, IngestSummary, UsageEvent, ingest_events

SOURCE = "gpuflows-train"


def training_event(
    *,
    flow_run_id: str,
    attempt: int,
    run_name: str,
    customer: str,
    project: str,
    supplier: str,
    gpu_type: str,
    gpu_count: float,
    start: datetime,
    end: datetime,
) -> UsageEvent:
    return UsageEvent(
        source=SOURCE,
        event_id=f"{flow_run_id}:{attempt}",
        customer=customer,
        project=project,
        job=f"train:{run_name}",
        supplier=supplier,
        node=socket.gethostname(),  # the pod or host that held the GPU
        gpu_type=gpu_type,
        gpu_count=Decimal(str(gpu_count)),
        start=start,
        end=end,
    )


def record_training_usage(
    engine: sa.Engine, event: UsageEvent, gpu_types: Collection[str] = DEFAULT_GPU_TYPES
) -> IngestSummary:
    return ingest_events(engine, [event], event.job, SOURCE, gpu_types)
