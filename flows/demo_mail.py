"""The demo's mail: a loopback SMTP mailbox (aiosmtpd, installed with the dev tools) that files each message
under its recipient, and a Contacts block that gives every customer and supplier in the ledger an address
on it, so `deliver-statements` and the weekly reports can be watched end to end without a mail provider.

    gpuflows demo mailbox            # 127.0.0.1:2525, messages in .gpuflows/mailbox/<recipient>/
    gpuflows demo contacts           # the `default` Contacts block: every owner, its own address there
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from blocks.contacts import Contact, Contacts
from tasks.billing.statements import safe_name
from tasks.schema import usage_events

DOMAIN = "gpuflows-demo.invalid"


def address(kind: str, owner: str) -> str:
    """A mailbox per owner whatever its id: `customer.acme-1a2b3c4d5e@gpuflows-demo.invalid`."""
    return f"{kind}.{safe_name(owner)}@{DOMAIN}"


def ledger_owners(engine: sa.Engine) -> dict[str, list[str]]:
    with engine.connect() as connection:
        return {
            kind: list(connection.execute(sa.select(column).distinct().order_by(column)).scalars())
            for kind, column in (("customer", usage_events.c.customer), ("supplier", usage_events.c.supplier))
        }


def demo_contacts(engine: sa.Engine, host: str = "127.0.0.1", port: int = 2525) -> Contacts:
    """Every customer and supplier of the ledger, each wanting its documents at its own demo address."""
    server = f"mailto://{host}:{port}?from=billing@{DOMAIN}&mode=insecure"
    documents = {"customer": ["invoice", "forecast"], "supplier": ["payout", "forecast"]}
    contacts, channels = [], {}
    for kind, owners in ledger_owners(engine).items():
        for owner in owners:
            contacts.append(Contact(kind=kind, id=owner, documents=documents[kind]))
            channels[f"{kind}:{owner}"] = {"email": [f"{server}&to={address(kind, owner)}"]}
    return Contacts(contacts=contacts, channels=channels)


@contextmanager
def mailbox(folder: Path, host: str = "127.0.0.1", port: int = 2525) -> Iterator[Any]:
    """An SMTP server that writes each message to folder/<recipient>/<n>.eml."""
    from aiosmtpd.controller import Controller

    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
            for recipient in envelope.rcpt_tos:
                box = folder / recipient.split("@")[0]
                with lock:
                    box.mkdir(parents=True, exist_ok=True)
                    (box / f"{len(list(box.glob('*.eml'))) + 1}.eml").write_bytes(envelope.original_content)
            return "250 OK"

    controller = Controller(Handler(), hostname=host, port=port)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def read_mailbox(folder: Path) -> dict[str, list[Any]]:
    """recipient → its messages, parsed."""
    return {
        box.name: [message_from_bytes(p.read_bytes()) for p in sorted(box.glob("*.eml"))]
        for box in sorted(folder.iterdir())
        if box.is_dir()
    }
