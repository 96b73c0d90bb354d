"""Statements are scoped: a customer's (or supplier's) file holds only its own lines and total, as settled,
and ids cannot escape the folder nor collide."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from tasks.billing.invoices import Line, Statement, settle
from tasks.billing.statements import safe_name, write_statements

MAY = date(2026, 5, 1)


def invoice(*lines: tuple[str, str], kind: str = "invoice") -> Statement:
    settled, exact, total = settle(
        [Line(MAY, owner, "p", "h100", None, 3_600_000_000, Fraction(amount)) for owner, amount in lines]
    )
    return Statement(kind, MAY, date(2026, 5, 31), "USD", tuple(settled), exact, total)  # type: ignore[arg-type]


def test_each_customer_gets_only_its_lines_and_a_total(tmp_path: Path) -> None:
    paths = write_statements(invoice(("acme", "2.70"), ("beta", "1.00"), ("acme", "0.30")), tmp_path)
    assert [p.name for p in paths] == [
        f"invoice-{safe_name('acme')}-2026-05-01-2026-05-31.csv",
        f"invoice-{safe_name('beta')}-2026-05-01-2026-05-31.csv",
    ]
    assert paths[0].name.startswith("invoice-acme-")
    acme = paths[0].read_text().splitlines()
    assert acme[0] == "customer,month,project,gpu_type,line,gpu_hours,amount,currency"
    assert acme[1] == "acme,2026-05,p,h100,usage,1.000000,2.70,USD"
    assert "beta" not in "".join(acme) and acme[-1] == "acme,total,,,,,3.00,USD"


def test_supplier_statements_show_capacity_columns(tmp_path: Path) -> None:
    [path] = write_statements(invoice(("homelab", "0.98"), kind="payout"), tmp_path)
    assert path.name.startswith("payout-homelab-")
    assert path.read_text().splitlines()[0].endswith(",capacity_gpu_hours,idle_gpu_hours")


def test_what_is_written_adds_up_to_the_total_billed(tmp_path: Path) -> None:
    """Three thirds of a cent: the lines say 0.00, 0.00 and 0.01, never 0.00 three times."""
    third = str(Fraction(1, 300))
    [path] = write_statements(invoice(("acme", third), ("acme", third), ("acme", third)), tmp_path)
    amounts = [line.split(",")[6] for line in path.read_text().splitlines()[1:]]
    assert sorted(amounts[:-1]) == ["0.00", "0.00", "0.01"] and amounts[-1] == "0.01"
    assert sum(Decimal(a) for a in amounts[:-1]) == Decimal(amounts[-1])


def test_a_hostile_customer_id_stays_in_the_folder(tmp_path: Path) -> None:
    [path] = write_statements(invoice(("../../etc/passwd", "1.00")), tmp_path / "out")
    assert path.parent == tmp_path / "out" and path.name.startswith("invoice-etc_passwd-")


def test_customers_whose_ids_differ_get_their_own_files(tmp_path: Path) -> None:
    """Case, punctuation and non-ASCII ids once mapped six customers to three files."""
    ids = ["acme", "acme~", "ACME", "acme!", "Ünïcødé", "Ünïcødé2"]
    paths = write_statements(invoice(*((i, "1.00") for i in ids)), tmp_path)
    assert len({p.name.lower() for p in paths}) == 6  # distinct even on a case-insensitive disk
    owners = {p.read_text().splitlines()[1].split(",")[0] for p in paths}
    assert owners == set(ids)
