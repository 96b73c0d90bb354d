"""Statements are scoped: a customer's file holds only its own rows, and ids cannot escape the folder."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from tasks.billing.statements import safe_name, write_statements


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
        f"statement-{safe_name('acme')}-2026-05-01-2026-05-31.csv",
        f"statement-{safe_name('beta')}-2026-05-01-2026-05-31.csv",
    ]
    assert paths[0].name.startswith("statement-acme-")
    acme = paths[0].read_text()
    assert "beta" not in acme and acme.splitlines()[-1] == "acme,total,,,,3.00,USD,"


def test_a_hostile_customer_id_stays_in_the_folder(tmp_path: Path) -> None:
    [path] = write_statements(
        [row("../../etc/passwd", "1.00")], tmp_path / "out", date(2026, 5, 1), date(2026, 5, 1)
    )
    assert path.parent == tmp_path / "out" and path.name.startswith("statement-etc_passwd-")


def test_customers_whose_ids_differ_get_their_own_files(tmp_path: Path) -> None:
    """Case, punctuation and non-ASCII ids once mapped six customers to three files."""
    ids = ["acme", "acme~", "ACME", "acme!", "Ünïcødé", "Ünïcødé2"]
    paths = write_statements([row(i, "1.00") for i in ids], tmp_path, date(2026, 5, 1), date(2026, 5, 1))
    assert len({p.name.lower() for p in paths}) == 6  # distinct even on a case-insensitive disk
    owners = {p.read_text().splitlines()[1].rsplit(",", 7)[0] for p in paths}
    assert owners == set(ids)
