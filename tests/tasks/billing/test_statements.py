"""Statements are scoped: a customer's file holds only its own rows, and ids cannot escape the folder."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from tasks.billing.statements import write_statements


def row(customer: str, cost: str) -> dict[str, object]:
    return {
        "customer": customer,
        "day": date(2026, 5, 1),
        "project": "p",
        "gpu_type": "h100",
        "gpu_hours": Decimal("1.000000"),
        "customer_cost": Decimal(cost),
        "currency": "USD",
    }


def test_each_customer_gets_only_its_rows_and_a_total(tmp_path: Path) -> None:
    paths = write_statements(
        [row("acme", "2.70"), row("beta", "1.00"), row("acme", "0.30")],
        tmp_path,
        date(2026, 5, 1),
        date(2026, 5, 31),
    )
    assert [p.name for p in paths] == [
        "statement-acme-2026-05-01-2026-05-31.csv",
        "statement-beta-2026-05-01-2026-05-31.csv",
    ]
    acme = paths[0].read_text()
    assert "beta" not in acme and acme.splitlines()[-1] == "acme,total,,,,3.00,USD,"


def test_a_hostile_customer_id_stays_in_the_folder(tmp_path: Path) -> None:
    [path] = write_statements(
        [row("../../etc/passwd", "1.00")], tmp_path / "out", date(2026, 5, 1), date(2026, 5, 1)
    )
    assert path.parent == tmp_path / "out" and path.name.startswith("statement-etc_passwd-")
