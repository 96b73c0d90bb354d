"""Real GPU-cluster traces as ledger events, for tests, benchmarks and a newcomer's first rollup.

Alibaba GenAI LoRA request trace (alibaba/clusterdata, cluster-trace-v2026-GenAI): one row per inference
request. Mapping: `groupId` is the customer, the model checkpoint is the project, each request is a job on
one GPU for `exec_time_seconds`. The trace has no request id, so the event id is its line number, stable
for a given file. Its clock has no timezone (and the publisher offset the dates); it is read as UTC.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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


def helios_vc_events(
    path: Path, customer: str | None = None, supplier: str = "sensetime-earth", gpu_type: str = "v100"
) -> Iterator[dict[str, Any]]:
    """Helios per-minute occupancy of one virtual cluster (S-Lab HeliosData, SenseTime's Earth cluster) as
    one usage event per hour: the hour's mean running GPUs (fractional) for one hour.

    The virtual cluster is the customer (its id from the file name unless given); the cluster's GPUs are
    read as V100s, an assumption: the trace names no model. Minutes are read as UTC. An hour with no
    minute in the file is no event (a gap, which the forecast detects); an all-zero hour is no event
    either (no usage).
    """
    import gzip

    customer = customer or path.name.split("_")[0]
    opener = gzip.open if path.suffix == ".gz" else open
    hours: dict[datetime, list[float]] = {}
    with opener(path, "rt", newline="", encoding="utf-8") as handle:  # type: ignore[operator]
        reader = csv.DictReader(handle)
        if not {"time", "running_gpu_num"} <= set(reader.fieldnames or []):
            raise InputError(f"{path} is not a Helios cluster sequence: no time or running_gpu_num column")
        for row in reader:
            try:
                minute = datetime.strptime(row["time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                running = float(row["running_gpu_num"])
            except ValueError:
                raise InputError(
                    f"{path}, line {reader.line_num}: unreadable time or running_gpu_num"
                ) from None
            hours.setdefault(minute.replace(minute=0), []).append(running)
    for hour, minutes in sorted(hours.items()):
        gpus = sum(minutes) / 60  # minutes missing from the hour count as idle
        if gpus <= 0:
            continue
        yield {
            "source": "helios-earth",
            "event_id": f"{customer}:{hour:%Y-%m-%dT%H}",
            "customer": customer,
            "project": "default",
            "job": "cluster-occupancy",
            "supplier": supplier,
            "node": "",
            "gpu_type": gpu_type,
            "gpu_count": f"{gpus:.6f}",
            "start": hour.isoformat(),
            "end": (hour + timedelta(hours=1)).isoformat(),
        }


def helios_capacity_rows(
    path: Path, clusters: list[str], supplier: str = "sensetime-earth", gpu_type: str = "v100"
) -> list[dict[str, str]]:
    """The daily GPU quota of the given Helios virtual clusters (Earth_gpu_number.csv) as capacity rows,
    one per cluster and day: what the supplier offered those customers (tasks.billing.capacity's columns)."""
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        absent = set(clusters) - set(reader.fieldnames or [])
        if absent:
            raise InputError(f"{path} has no column for {', '.join(sorted(absent))}")
        for row in reader:
            day = datetime.strptime(row["date"], "%Y-%m-%d").replace(tzinfo=UTC)
            for cluster in clusters:
                if float(row[cluster]) > 0:
                    rows.append(
                        {
                            "supplier": supplier,
                            "node": f"{cluster}-quota",
                            "gpu_type": gpu_type,
                            "gpu_count": row[cluster],
                            "valid_from": day.isoformat(),
                            "valid_to": (day + timedelta(days=1)).isoformat(),
                        }
                    )
    return rows
