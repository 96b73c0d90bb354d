"""Per-customer billing statements as CSV: one file per customer and period, holding only its rows."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

COLUMNS = ("day", "project", "gpu_type", "gpu_hours", "customer_cost", "currency")


def safe_name(customer: str) -> str:
    """A file name that cannot leave the statements folder, whatever the customer id contains."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", customer).strip("._") or "customer"


def write_statements(
    rows: Sequence[dict[str, Any]], out_dir: Path, first_day: date, last_day: date
) -> list[Path]:
    """statement-<customer>-<first>-<last>.csv per customer; the last line is the period's total."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_customer.setdefault(row["customer"], []).append(row)
    written = []
    for customer, own in sorted(by_customer.items()):
        path = out_dir / f"statement-{safe_name(customer)}-{first_day}-{last_day}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customer", *COLUMNS])
            for row in own:
                writer.writerow([customer, *(row[c] for c in COLUMNS)])
            total = sum((Decimal(str(r["customer_cost"])) for r in own), Decimal(0))
            writer.writerow([customer, "total", "", "", "", f"{total:.2f}", own[0]["currency"]])
        written.append(path)
    return written
