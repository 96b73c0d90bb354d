"""Supplier capacity: which nodes, with how many GPUs of which type, each supplier offers and since when.

Idle capacity as OpenCost reports it: capacity GPU-hours (GPUs x hours a node was offered that day) minus
allocated GPU-hours (what the ledger billed). Capacity is loaded from a CSV node list
(`gpuflows capacity load FILE`): one atomic batch, upserted by (supplier, node, valid_from); a bad row stops
the load naming its line and field, and nothing of the file is written.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tasks.billing.ledger import DEFAULT_GPU_TYPES, as_utc, parse_time
from tasks.errors import InputError
from tasks.schema import supplier_capacity

COLUMNS = ("supplier", "node", "gpu_type", "gpu_count", "valid_from", "valid_to")


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    supplier: str
    node: str
    gpu_type: str
    gpu_count: Decimal
    valid_from: datetime
    valid_to: datetime | None


def read_capacity(path: Path, gpu_types: Collection[str] = DEFAULT_GPU_TYPES) -> list[NodeCapacity]:
    """Every row of a capacity CSV, or InputError naming the file, line and field of the first bad one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"capacity file {path} cannot be read: {exc.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    missing = set(COLUMNS[:5]) - set(reader.fieldnames or [])
    if missing:
        raise InputError(
            f"{path}: the header lacks {', '.join(sorted(missing))} (columns: {', '.join(COLUMNS)})"
        )
    nodes = []
    for row in reader:
        where = f"{path}, line {reader.line_num}"
        try:
            nodes.append(_node(row, gpu_types))
        except ValueError as exc:
            raise InputError(f"{where}: {exc}") from None
    return nodes


def _node(row: dict[str, Any], gpu_types: Collection[str]) -> NodeCapacity:
    for name in ("supplier", "node", "gpu_type", "gpu_count", "valid_from"):
        if not (row.get(name) or "").strip():
            raise ValueError(f"missing {name}")
    gpu_type = row["gpu_type"].strip().lower()
    if gpu_type not in gpu_types:
        raise ValueError(f"unknown GPU type {row['gpu_type']!r}")
    try:
        count = Decimal(row["gpu_count"])
    except InvalidOperation:
        raise ValueError(f"gpu_count {row['gpu_count']!r} is not a number") from None
    if not count.is_finite() or count <= 0:
        raise ValueError(f"gpu_count must be positive, got {row['gpu_count']}")
    valid_from = parse_time(row["valid_from"], "valid_from")
    valid_to = parse_time(row["valid_to"], "valid_to") if (row.get("valid_to") or "").strip() else None
    if valid_to is not None and valid_to <= valid_from:
        raise ValueError("valid_to is not after valid_from")
    return NodeCapacity(row["supplier"].strip(), row["node"].strip(), gpu_type, count, valid_from, valid_to)


def load_capacity(engine: sa.Engine, nodes: list[NodeCapacity]) -> int:
    """Upsert the nodes in one transaction; returns how many rows were written."""
    rows = [
        {
            "supplier": n.supplier,
            "node": n.node,
            "gpu_type": n.gpu_type,
            "gpu_count": n.gpu_count,
            "valid_from": n.valid_from,
            "valid_to": n.valid_to,
        }
        for n in nodes
    ]
    if not rows:
        return 0
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        statement = insert(supplier_capacity)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["supplier", "node", "valid_from"],
                set_={
                    "gpu_type": statement.excluded.gpu_type,
                    "gpu_count": statement.excluded.gpu_count,
                    "valid_to": statement.excluded.valid_to,
                },
            ),
            rows,
        )
    return len(rows)


def _offered_rows(connection: sa.Connection, start: datetime, end: datetime) -> list[Any]:
    """Capacity rows valid at some point of [start, end)."""
    c = supplier_capacity.c
    query = sa.select(supplier_capacity).where(
        c.valid_from < end, sa.or_(c.valid_to.is_(None), c.valid_to > start)
    )
    return list(connection.execute(query))


def _offered(row: Any, start: datetime, end: datetime) -> Decimal:
    """GPU-hours a capacity row offers within [start, end)."""
    lo = max(as_utc(row.valid_from), start)
    hi = end if row.valid_to is None else min(as_utc(row.valid_to), end)
    if hi <= lo:
        return Decimal(0)
    return (
        Decimal((hi - lo) // timedelta(microseconds=1)) / Decimal(3_600_000_000) * Decimal(str(row.gpu_count))
    )


def capacity_hours(
    connection: sa.Connection, first: date, last: date
) -> dict[tuple[date, str, str], Decimal]:
    """(day, supplier, GPU type) → GPU-hours offered, for every day of first..last."""
    lo = datetime.combine(first, time(), UTC)
    hi = datetime.combine(last + timedelta(days=1), time(), UTC)
    hours: dict[tuple[date, str, str], Decimal] = defaultdict(Decimal)
    for row in _offered_rows(connection, lo, hi):
        day = max(as_utc(row.valid_from), lo).date()
        end = hi if row.valid_to is None else min(as_utc(row.valid_to), hi)
        while (day_start := datetime.combine(day, time(), UTC)) < end:
            if offered := _offered(row, day_start, day_start + timedelta(days=1)):
                hours[(day, row.supplier, row.gpu_type)] += offered
            day += timedelta(days=1)
    return dict(hours)


def capacity_between(connection: sa.Connection, start: datetime, end: datetime) -> dict[str, Decimal]:
    """Supplier → GPU-hours offered over [start, end)."""
    hours: dict[str, Decimal] = defaultdict(Decimal)
    for row in _offered_rows(connection, start, end):
        if offered := _offered(row, start, end):
            hours[row.supplier] += offered
    return dict(hours)
