"""Invoices and payout statements as CSV: one file per customer (or supplier) and period, holding only its
own lines, then its total. Lines and totals are the settled ones (tasks/billing/invoices.py): what is written
is what is billed, to the cent.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

from tasks.billing.invoices import Statement

COLUMNS = ("month", "project", "gpu_type", "line", "gpu_hours", "amount", "currency")
CAPACITY = ("capacity_gpu_hours", "idle_gpu_hours")


def safe_name(owner: str) -> str:
    """A file name part that cannot leave its folder and never collides: a readable form of the id plus a
    short hash of the exact id, so `acme` and `acme~`, `ACME` and `acme`, or two Unicode ids differ."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", owner).strip("._")[:60] or "id"
    digest = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{readable}-{digest}"


def statement_path(out_dir: Path, statement: Statement, owner: str) -> Path:
    return out_dir / f"{statement.kind}-{safe_name(owner)}-{statement.first_day}-{statement.last_day}.csv"


def write_statements(statement: Statement, out_dir: Path) -> list[Path]:
    """invoice-<customer>-<first>-<last>.csv or payout-<supplier>-…; the last line is the owner's total."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_statement_of(statement, owner, out_dir) for owner in statement.owners()]


def write_statement_of(statement: Statement, owner: str, out_dir: Path) -> Path:
    """One owner's lines and total, and nobody else's."""
    who = "customer" if statement.kind == "invoice" else "supplier"
    extra = CAPACITY if statement.kind == "payout" else ()
    path = statement_path(out_dir, statement, owner)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([who, *COLUMNS, *extra])
        for line in statement.lines_of(owner):
            writer.writerow(
                [
                    owner,
                    f"{line.month:%Y-%m}",
                    line.project,
                    line.gpu_type,
                    line.description,
                    line.gpu_hours,
                    f"{line.amount:.2f}",
                    statement.currency,
                    *(
                        ("" if v is None else v for v in (line.capacity_gpu_hours, line.idle_gpu_hours))
                        if extra
                        else ()
                    ),
                ]
            )
        total = f"{statement.total_of(owner):.2f}"
        writer.writerow([owner, "total", "", "", "", "", total, statement.currency, *("" for _ in extra)])
    return path
