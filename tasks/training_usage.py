"""The training flow's own GPU usage, written to the ledger like any other usage event.

One event per flow-run attempt (event id `<flow run id>:<attempt>`), so a retried run bills each attempt's
GPU time once and a re-recorded attempt is a counted duplicate, never a second charge.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime

from tasks.ledger import IngestSummary, connect, ingest_rows

SOURCE = "gpuflows-train"


def record_training_usage(
    ledger_url: str,
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
) -> IngestSummary:
    record = {
        "source": SOURCE,
        "event_id": f"{flow_run_id}:{attempt}",
        "customer": customer,
        "project": project,
        "job": f"train:{run_name}",
        "supplier": supplier,
        "node": socket.gethostname(),  # the pod or host that held the GPU
        "gpu_type": gpu_type,
        "gpu_count": str(gpu_count),
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
    rows = iter([(1, json.dumps(record), record, None)])
    return ingest_rows(connect(ledger_url), rows, f"train:{run_name}", SOURCE)
