"""Issue 16's demo, as the README tells it: the seeded demo ledger, `gpuflows demo contacts` and `gpuflows
demo mailbox`, one run of the monthly delivery: each demo customer and supplier finds exactly its own
documents in its own mailbox, and a second run adds nothing."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from blocks.alert_routes import AlertRoutes
from blocks.ledger import LedgerDatabase
from flows.bootstrap import seed_ledger
from flows.deliver_statements import deliver_statements
from flows.demo_mail import address, demo_contacts, ledger_owners, mailbox, read_mailbox
from tasks.billing.invoices import statements_for
from tasks.database import connect
from tests.conftest import free_port
from tests.flows.test_deliver_statements import texts


def test_the_demo_month_reaches_every_owner_once_and_only_its_own(
    tmp_path: Path, prefect_server: str
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    seed_ledger(url)
    engine = connect(url)
    LedgerDatabase(url=url).save("demo-mail", overwrite=True)
    AlertRoutes().save("demo-mail", overwrite=True)
    port = free_port()
    demo_contacts(engine, port=port).save("demo-mail", overwrite=True)
    run = {
        "month": date(2024, 11, 1),
        "ledger": "demo-mail",
        "alert_routes": "demo-mail",
        "contacts": "demo-mail",
        "out_dir": tmp_path / "out",
    }
    with mailbox(tmp_path / "mailbox", port=port):
        first = deliver_statements(**run)
        second = deliver_statements(**run)
    invoice, payout = statements_for(engine, date(2024, 11, 1), date(2024, 11, 30), "USD")[0]
    assert (first.invoices, first.payouts, first.failed, first.no_contact) == (
        len(invoice.owners()),
        len(payout.owners()),
        0,
        0,
    )
    assert first.sent == first.invoices + first.payouts == 46 + 1
    assert (second.sent, second.already_sent) == (0, first.sent)
    assert invoice.total == sum(invoice.total_of(c) for c in invoice.owners())  # rounded once, no leak
    boxes = read_mailbox(tmp_path / "mailbox")
    owners = ledger_owners(engine)
    everyone = [(k, o) for k, listed in owners.items() for o in listed]
    ids = [o for _, o in everyone]
    assert not [(a, b) for a in ids for b in ids if a != b and a in b], "no id inside another: a fair check"
    expected = {address("customer", c).split("@")[0]: ("customer", c) for c in invoice.owners()} | {
        address("supplier", s).split("@")[0]: ("supplier", s) for s in payout.owners()
    }
    assert set(boxes) == set(expected), "a mailbox for every owner with lines that month, and no other"
    for box, messages in boxes.items():
        kind, owner = expected[box]
        assert len(messages) == 1, f"{box}: exactly one message"
        statement = invoice if kind == "customer" else payout
        body, files = texts(messages[0])
        assert f"{statement.total_of(owner):.2f} USD" in body
        for text in [messages[0]["Subject"], body, *(t for _, t in files)]:
            assert owner in text
            leaked = [o for _, o in everyone if o != owner and o in text]
            assert leaked == [], f"{box} shows {leaked}"


def test_the_demo_contacts_command_lists_every_owner_at_its_own_address(
    tmp_path: Path, prefect_server: str
) -> None:
    from click.testing import CliRunner

    from blocks.contacts import Contacts
    from flows.cli import cli

    url = f"sqlite:///{tmp_path}/ledger.db"
    seed_ledger(url)
    result = CliRunner().invoke(
        cli, ["demo", "contacts", "--database", url, "--block", "demo-cli", "--port", "2599"]
    )
    assert result.exit_code == 0, result.output
    owners = ledger_owners(connect(url))
    assert f"{len(owners['customer'])} customers, {len(owners['supplier'])} suppliers" in result.output
    people = Contacts.load("demo-cli").directory({})
    for kind, listed in owners.items():
        for owner in listed:
            [email] = people.find(kind, owner).channels["email"]
            assert email.startswith("mailto://127.0.0.1:2599?") and email.endswith(
                f"&to={address(kind, owner)}"
            )
