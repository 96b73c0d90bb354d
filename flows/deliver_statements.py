"""Flow `deliver-statements`: close the month → settle its invoices and payout statements → each customer
its own invoice, each supplier its own payout statement, by email (CSV + HTML) → an artifact of who got what.

Monthly, on the 3rd at 06:00 UTC: the month's last day has passed its 48-hour grace window by then, so the
month is closed and its lines are final. Re-runs never send a document twice; failed ones are retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.audit_hooks import AUDITED
from flows.delivery import deliver_task, missing_contacts, report
from flows.parameters import BlockName, IsoDate
from flows.resources import Prices, directory, ledger_engine, prices
from tasks.billing.budgets import month_bounds
from tasks.billing.deliveries import Outgoing
from tasks.billing.documents import document_dir, month_documents
from tasks.billing.invoices import Statement, statements_for
from tasks.billing.rollup import close_through, due_for_close, last_closed
from tasks.contacts import Directory
from tasks.errors import InputError


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    month: str
    invoices: int  # customers with lines this month
    payouts: int  # suppliers with lines this month
    sent: int
    already_sent: int
    failed: int
    no_contact: int


def previous_month(now: datetime) -> date:
    return (now.date().replace(day=1) - timedelta(days=1)).replace(day=1)


@task(name="close-month", cache_policy=NO_CACHE)
def close_month(engine: sa.Engine, card: Prices, last_day: date, grace_hours: int) -> date:
    """Close the month's days whose grace has passed (what the daily close does); its lines are final only
    when its last day is closed, else one clear error."""
    through = min(last_day, due_for_close(datetime.now(UTC), timedelta(hours=grace_hours)))
    close_through(engine, through, card.rates, card.currency)
    with engine.connect() as connection:
        closed = last_closed(connection)
    if closed is None or closed[0] < last_day:
        raise InputError(
            f"{last_day:%Y-%m} is not closed yet (closed through {closed[0] if closed else 'nothing'}): its "
            f"last day closes {grace_hours} h after it ends"
        )
    return closed[0]


@task(name="month-documents", cache_policy=NO_CACHE)
def plan_documents(
    statements: tuple[Statement, Statement], contacts: Directory, out_dir: Path
) -> tuple[list[Outgoing], list[tuple[str, str, list[str]]]]:
    """Each wanting owner's documents (its own lines only), and who wants one and cannot get it."""
    outgoing, missing = [], []
    for statement in statements:
        kind = "customer" if statement.kind == "invoice" else "supplier"
        found, lacking = contacts.wanting(kind, statement.kind, statement.owners())
        missing.append((kind, statement.kind, lacking))
        for recipient in found:
            outgoing.append(
                month_documents(statement, recipient.id, document_dir(out_dir, kind, recipient.id))
            )
    return outgoing, missing


@flow(
    name="deliver-statements",
    flow_run_name="statements-{month}",
    validate_parameters=True,
    **AUDITED,
)
def deliver_statements(
    month: IsoDate | None = None,
    grace_hours: Annotated[int, Field(ge=0, le=24 * 62)] = 48,
    ledger: BlockName = "default",
    rate_card: BlockName = "default",
    alert_routes: BlockName = "default",
    contacts: BlockName = "default",
    out_dir: Path = Path(".gpuflows/deliveries"),  # noqa: B008 - an immutable default
    retry_backoff_s: Annotated[float, Field(ge=0, le=300)] = 2.0,
) -> DeliverySummary:
    """Send each customer its invoice and each supplier its payout statement for a closed month, as CSV and
    HTML attached to an email (the Contacts block says who wants which, at which address). Once per
    recipient, document and month: re-runs send only what failed before.

    Args:
        month: Any day of the month to deliver; default the previous month. The demo ledger's usage is in
            2024-11 (Alibaba trace) and 2020-05 (Helios clusters).
        grace_hours: The daily close's grace window: the month's last day must have passed it.
        ledger: Name of the LedgerDatabase block.
        rate_card: Name of the RateCard block.
        alert_routes: Name of the AlertRoutes block (the operators).
        contacts: Name of the Contacts block (customers and suppliers).
        out_dir: Where each recipient's documents are written (a folder per recipient).
        retry_backoff_s: First wait between delivery attempts (3 attempts, exponential).
    """
    logger = get_run_logger()
    engine, card = ledger_engine(ledger), prices(rate_card)  # each block loaded once
    people = directory(alert_routes, contacts)
    first, last = month_bounds(month or previous_month(datetime.now(UTC)))
    close_month(engine, card, last, grace_hours)
    invoice, payout = statements_for(engine, first, last, card.currency)[0]
    outgoing, missing = plan_documents((invoice, payout), people, out_dir)
    period = f"{first:%Y-%m}"
    lacking = [
        d for kind, document, owners in missing for d in missing_contacts(kind, document, owners, period)
    ]
    results = deliver_task(engine, people, outgoing, backoff_s=retry_backoff_s) + lacking
    count = {s: sum(r.status == s for r in results) for s in ("sent", "already sent", "failed", "no contact")}
    logger.info(
        "%s: %d invoice(s), %d payout statement(s): %s",
        period,
        len(invoice.owners()),
        len(payout.owners()),
        count,
    )
    report(
        "deliveries-statements",
        results,
        f"{period}: invoices {invoice.total} {invoice.currency} to {len(invoice.owners())} customer(s), "
        f"payouts {payout.total} to {len(payout.owners())} supplier(s); {count['sent']} sent, "
        f"{count['already sent']} sent before, {count['failed']} failed, {count['no contact']} without a "
        "contact",
    )
    return DeliverySummary(
        period,
        len(invoice.owners()),
        len(payout.owners()),
        count["sent"],
        count["already sent"],
        count["failed"],
        count["no contact"],
    )
