"""Real GPU-cluster traces as ledger events, for tests, benchmarks and a newcomer's first rollup.

Alibaba GenAI LoRA request trace (alibaba/clusterdata, cluster-trace-v2026-GenAI): one row per inference
request. Mapping: `groupId` is the customer, the model checkpoint is the project, each request is a job on
one GPU for `exec_time_seconds`. The trace has no request id, so the event id is its line number, stable
for a given file. Its clock has no timezone (and the publisher offset the dates); it is read as UTC.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.errors import InputError


def lora_trace_events(path: Path, gpu_type: str, supplier: str = "alibaba-genai") -> Iterator[dict[str, Any]]:
    """One usage record per trace row, as the ledger's ingestion reads them (bad rows are its to judge)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {
            "gmt_create",
            "predict_type",
            "predict_status",
            "exec_time_seconds",
            "groupId",
            "checkpoint_model_version_id",
        } - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path} is not a LoRA request trace: no {', '.join(sorted(missing))} column")
        for row in reader:
            try:
                start = (
                    datetime.strptime(row["gmt_create"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).isoformat()
                )
            except ValueError:
                start = row["gmt_create"]  # passed through: ingestion quarantines it with the reason
            yield {
                "source": "alibaba-genai-lora",
                "event_id": f"{path.name}:{reader.line_num}",
                "customer": row["groupId"],
                "project": row["checkpoint_model_version_id"],
                "job": f"{row['predict_type']}:{row['predict_status']}".lower(),
                "supplier": supplier,
                "node": "",
                "gpu_type": gpu_type,
                "gpu_count": 1,
                "start": start,
                "duration_seconds": row["exec_time_seconds"],
            }
