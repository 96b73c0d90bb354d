"""The weekly forecast report each customer and supplier may ask for (Contacts: documents "forecast"): its
own chart, table (CSV) and projected month end, by email. Built from the same outlooks as the UI's reports,
each in a folder of its own, so an attachment can never be another's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from pathlib import Path

from apprise import NotifyFormat
from apprise.conversion import convert_between

from tasks.billing.deliveries import Outgoing
from tasks.billing.documents import document_dir
from tasks.contacts import Directory
from tasks.forecast.reports import (
    CustomerOutlook,
    SupplierOutlook,
    customer_chart,
    customer_csv,
    customer_markdown,
    supplier_csv,
    supplier_markdown,
)


def week_of(as_of: datetime) -> str:
    return f"{as_of:%G-W%V}"


def as_html(markdown: str) -> str:
    """The report's Markdown as an email body; ids are escaped first (Markdown passes HTML through)."""
    return convert_between(NotifyFormat.MARKDOWN, NotifyFormat.HTML, escape(markdown, quote=False))


def weekly_outgoing(
    customers: Sequence[CustomerOutlook],
    suppliers: Sequence[SupplierOutlook],
    people: Directory,
    out_root: Path,
    as_of: datetime,
) -> tuple[list[Outgoing], list[tuple[str, list[str]]]]:
    """The reports to send this week, and (kind, owners) that cannot get theirs."""
    week = week_of(as_of)
    outgoing: list[Outgoing] = []
    wanted, lacking = people.wanting("customer", "forecast", [o.customer for o in customers])
    by_id = {o.customer: o for o in customers}
    for recipient in wanted:
        outlook, folder = by_id[recipient.id], document_dir(out_root, "customer", recipient.id)
        files = (customer_csv(outlook, folder), customer_chart(outlook, folder))
        title = f"GPU usage forecast, week {week}: {recipient.id}"
        outgoing.append(
            Outgoing(
                "customer", recipient.id, "forecast", week, title, as_html(customer_markdown(outlook)), files
            )
        )
    missing = [("customer", lacking)]
    wanted, lacking = people.wanting("supplier", "forecast", [o.supplier for o in suppliers])
    by_supplier = {o.supplier: o for o in suppliers}
    for recipient in wanted:
        outlook, folder = by_supplier[recipient.id], document_dir(out_root, "supplier", recipient.id)
        files = tuple(supplier_csv([outlook], folder))
        title = f"Supplier outlook, week {week}: {recipient.id}"
        outgoing.append(
            Outgoing(
                "supplier", recipient.id, "forecast", week, title, as_html(supplier_markdown(outlook)), files
            )
        )
    missing.append(("supplier", lacking))
    return outgoing, missing
