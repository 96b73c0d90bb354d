"""Monthly invoices and payout statements to each customer and supplier, through a real SMTP server on
loopback (issue 16): every message and attachment holds only its recipient's own ids and numbers; re-runs
send nothing twice; a failed delivery fails the run, names the recipient, and the next run retries it; an
owner without a contact is a warning and an artifact row, not a silent skip."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from email.message import Message
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from blocks.alert_routes import AlertRoutes
from blocks.contacts import Contact, Contacts
from blocks.ledger import LedgerDatabase
from flows.deliver_statements import deliver_statements
from flows.delivery import DeliveryError
from tasks.billing.deliveries import delivery_records
from tasks.billing.invoices import statements_for
from tasks.database import connect
from tests.standins.receivers import smtp_receiver

CUSTOMERS = ["acme", "ACME", "beta-labs", "Zürich-ai", "quiet-co", "no-contact-co"]
SUPPLIERS = ["homelab-1", "dc-east"]
SECRET_PASS = "s3cret-smtp-pass"  # pragma: allowlist secret


def events(path: Path) -> Path:
    """November 2024: every customer on both suppliers, two projects, and one event in December."""
    rows = []
    for i, customer in enumerate(CUSTOMERS):
        for j, supplier in enumerate(SUPPLIERS):
            rows.append(
                {
                    "source": "delivery-test",
                    "event_id": f"{i}-{j}",
                    "customer": customer,
                    "project": f"proj-{j}",
                    "supplier": supplier,
                    "gpu_type": "a100",
                    "gpu_count": 1 + i % 3,
                    "start": f"2024-11-{3 + i:02d}T08:00:00Z",
                    "end": f"2024-11-{3 + i:02d}T{9 + j:02d}:17:00Z",
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mailbox(port: int, who: str) -> str:
    """Each owner's own address: rcpt<n>@owners.test (ids differ only in case or are not ASCII)."""
    return (
        f"mailto://alerts:{SECRET_PASS}@127.0.0.1:{port}?from=billing@gpuflows.test"
        f"&to=rcpt{(CUSTOMERS + SUPPLIERS).index(who)}@owners.test&mode=insecure"
    )


def contacts(port: int, broken: str | None = None) -> Contacts:
    listed, urls = [], {}
    for kind, owners, document in (("customer", CUSTOMERS, "invoice"), ("supplier", SUPPLIERS, "payout")):
        for owner in owners:
            if owner == "no-contact-co":
                continue
            listed.append(Contact(kind=kind, id=owner, documents=[] if owner == "quiet-co" else [document]))
            urls[f"{kind}:{owner}"] = {"email": [mailbox(1 if owner == broken else port, owner)]}
    return Contacts(contacts=listed, channels=urls)


def texts(message: Message) -> tuple[str, list[tuple[str, str]]]:
    """The message's body and its attachments (name, text)."""
    body, files = "", []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True).decode("utf-8", errors="replace")  # a PNG stays bytes-ish
        if part.get_filename():
            files.append((part.get_filename(), payload))
        else:
            body += payload
    return body, files


def test_each_owner_gets_only_its_own_documents_once(tmp_path: Path, prefect_server: str) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = connect(url)
    from tasks.billing.ledger import ingest_file

    assert ingest_file(engine, events(tmp_path / "usage.jsonl")).inserted == 12
    LedgerDatabase(url=url).save("deliver-test", overwrite=True)
    AlertRoutes().save("deliver-test", overwrite=True)
    params = {
        "month": date(2024, 11, 9),
        "ledger": "deliver-test",
        "rate_card": "default",
        "alert_routes": "deliver-test",
        "contacts": "deliver-test",
        "out_dir": tmp_path / "out",
        "retry_backoff_s": 0,
    }
    with smtp_receiver() as mail:
        contacts(mail.port, broken="beta-labs").save("deliver-test", overwrite=True)
        with pytest.raises(DeliveryError, match="invoice 2024-11 to customer beta-labs"):
            deliver_statements(**params)
        assert len(mail.messages) == 3 + 2  # acme, ACME, Zürich-ai; two suppliers
        contacts(mail.port).save("deliver-test", overwrite=True)  # the operator fixes the address
        second = deliver_statements(**params)
        assert (second.sent, second.already_sent, second.failed, second.no_contact) == (1, 5, 0, 1)
        third = deliver_statements(**params)
        assert (third.sent, third.already_sent, third.failed) == (0, 6, 0)
    assert len(mail.messages) == 6, "every document exactly once"

    records = {(r["kind"], r["recipient"]): r for r in delivery_records(engine, "2024-11")}
    assert records[("customer", "beta-labs")]["attempts"] == 2
    assert records[("customer", "beta-labs")]["status"] == "sent"
    assert ("customer", "quiet-co") not in records and ("customer", "no-contact-co") not in records

    invoice, payout = statements_for(engine, date(2024, 11, 1), date(2024, 11, 30), "USD")[0]
    everyone = CUSTOMERS + SUPPLIERS
    for message in mail.messages:
        owner = everyone[int(message["To"].split("@")[0].removeprefix("rcpt"))]
        statement = invoice if owner in CUSTOMERS else payout
        body, files = texts(message)
        assert sorted(name.rsplit(".", 1)[1] for name, _ in files) == ["csv", "html"]
        total = f"{statement.total_of(owner):.2f}"
        for name, text in [("subject", message["Subject"]), ("body", body), *files]:
            for other in everyone:
                if other != owner:
                    assert other not in text, f"{other} in {owner}'s {name}"
            assert SECRET_PASS not in text
        csv_text = dict(files)[next(n for n, _ in files if n.endswith(".csv"))]
        assert csv_text.splitlines()[-1].split(",")[6] == total, "the CSV ends with the owner's own total"
        assert len(csv_text.splitlines()) == len(statement.lines_of(owner)) + 2
        assert total in body

    artifact = Artifact.get("deliveries-statements")
    assert (
        artifact is not None and SECRET_PASS not in str(artifact.data) and "mailto" not in str(artifact.data)
    )
    assert "no-contact-co" in str(artifact.data) and "no contact" in str(artifact.data)


def test_an_open_month_is_refused_with_one_line(tmp_path: Path, prefect_server: str) -> None:
    """This month has not ended: its lines are not final, and nothing is sent."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    from tasks.billing.ledger import ingest_file

    ingest_file(connect(url), events(tmp_path / "usage.jsonl"))
    LedgerDatabase(url=url).save("deliver-open", overwrite=True)
    AlertRoutes().save("deliver-open", overwrite=True)
    Contacts().save("deliver-open", overwrite=True)
    today = datetime.now(UTC).date()
    with pytest.raises(Exception, match=rf"^{today:%Y-%m} is not closed yet \(closed through "):
        deliver_statements(
            month=today,
            ledger="deliver-open",
            alert_routes="deliver-open",
            contacts="deliver-open",
            out_dir=tmp_path / "out",
        )
    assert delivery_records(connect(url)) == []
