"""Per-customer billing statements as CSV: one file per customer and period, holding only its rows.

Usage rows first, then adjustments billed in the period (late usage of an earlier, closed day, marked with
that day), then the period's total.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

COLUMNS = ("day", "project", "gpu_type", "gpu_hours", "customer_cost", "currency")


def safe_name(owner: str) -> str:
    """A file name part that cannot leave its folder and never collides: a readable form of the id plus a
    short hash of the exact id, so `acme` and `acme~`, `ACME` and `acme`, or two Unicode ids differ."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", owner).strip("._")[:60] or "id"
    digest = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{readable}-{digest}"


def write_statements(
    rows: Sequence[dict[str, Any]],
    out_dir: Path,
    first_day: date,
    last_day: date,
    adjustments: Sequence[dict[str, Any]] = (),
) -> list[Path]:
    """statement-<customer>-<first>-<last>.csv per customer; the last line is the period's total."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_customer: dict[str, list[list[Any]]] = {}
    totals: dict[str, Decimal] = {}
    currency: dict[str, str] = {}
    for row in rows:
        by_customer.setdefault(row["customer"], []).append([row[c] for c in COLUMNS] + [""])
    for adj in adjustments:
        by_customer.setdefault(adj["customer"], []).append(
            [
                adj["billed_day"],
                adj["project"],
                adj["gpu_type"],
                adj["gpu_hours"],
                adj["customer_cost"],
                adj["currency"],
                f"adjustment: late usage of {adj['usage_day']}",
            ]
        )
    for customer, own in by_customer.items():
        totals[customer] = sum((Decimal(str(r[4])) for r in own), Decimal(0))
        currency[customer] = own[0][5]
    written = []
    for customer, own in sorted(by_customer.items()):
        path = out_dir / f"statement-{safe_name(customer)}-{first_day}-{last_day}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customer", *COLUMNS, "note"])
            for line in own:
                writer.writerow([customer, *line])
            writer.writerow(
                [customer, "total", "", "", "", f"{totals[customer]:.2f}", currency[customer], ""]
            )
        written.append(path)
    return written
