"""Flow `billing-rollup`: close due periods → recompute open days → budget alerts → statements and artifacts.

Hourly it recomputes yesterday and today; the daily close (`close=True`) first closes every day whose grace
window has passed, turning later usage for those days into adjustments.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from flows.audit_hooks import AUDITED
from flows.parameters import BlockName, IsoDate
from flows.resources import Billing, billing_resources
from tasks.billing.budgets import BudgetAlert, check_budgets, month_bounds
from tasks.billing.invoices import Statement, statements_for
from tasks.billing.rollup import ClosedPeriod, RollupSummary, close_through, due_for_close, rollup_days
from tasks.billing.statements import write_statements
from tasks.errors import InputError


def close_due_periods(grace_hours: int, billing: Billing) -> list[ClosedPeriod]:
    through = due_for_close(datetime.now(UTC), timedelta(hours=grace_hours))
    return close_through(billing.engine, through, billing.prices.rates, billing.prices.currency)


def roll_up(first_day: date, last_day: date, billing: Billing) -> RollupSummary:
    return rollup_days(billing.engine, first_day, last_day, billing.prices.rates, billing.prices.currency)


def alert_on_budgets(months: list[date], billing: Billing) -> list[BudgetAlert]:
    policy = billing.budgets
    decided: list[BudgetAlert] = []
    for month in months:
        decided += check_budgets(
            billing.engine, policy.lines, policy.thresholds, month, billing.prices.currency, billing.send
        )
    return decided


def statements(first_day: date, last_day: date, billing: Billing, out_dir: Path) -> list[Statement]:
    """Each (part) month's invoices and payout statements, settled to the cent, one CSV per owner."""
    months = statements_for(billing.engine, first_day, last_day, billing.prices.currency)
    settled = [statement for pair in months for statement in pair]
    for statement in settled:
        write_statements(statement, out_dir)
    return settled


def line_table(statement: Statement) -> list[dict[str, str]]:
    """A statement's lines as the UI shows them: the owner's id, never an address."""
    who = "customer" if statement.kind == "invoice" else "supplier"
    rows = []
    for line in statement.lines:
        row = {
            who: line.owner,
            "month": f"{line.month:%Y-%m}",
            **({"project": line.project} if statement.kind == "invoice" else {}),
            "gpu_type": line.gpu_type,
            "line": line.description,
            "gpu_hours": str(line.gpu_hours),
            "amount": f"{line.amount:.2f}",
            "currency": statement.currency,
        }
        if statement.kind == "payout":
            for name, hours in (("capacity", line.capacity_gpu_hours), ("idle", line.idle_gpu_hours)):
                row[f"{name}_gpu_hours"] = "" if hours is None else str(hours)
        rows.append(row)
    return rows


close_task = task(close_due_periods, name="close-due-periods", cache_policy=NO_CACHE)
roll_up_task = task(roll_up, name="roll-up-days", cache_policy=NO_CACHE)
budgets_task = task(alert_on_budgets, name="budget-alerts", cache_policy=NO_CACHE)
statements_task = task(statements, name="write-statements", cache_policy=NO_CACHE)


def rollup_run_name(parameters: dict) -> str:
    """`rollup-2024-11-15-2024-11-26`; a scheduled run (no days given) is named after the days it covers."""
    today = datetime.now(UTC).date()
    first = parameters.get("first_day") or today - timedelta(days=1)
    last = parameters.get("last_day") or today
    return f"{'close-and-rollup' if parameters.get('close') else 'rollup'}-{first}-{last}"


@flow(
    name="billing-rollup",
    flow_run_name=lambda: rollup_run_name(flow_run.parameters),
    validate_parameters=True,
    **AUDITED,
)
def billing_rollup(
    first_day: IsoDate | None = None,
    last_day: IsoDate | None = None,
    close: bool = False,
    grace_hours: Annotated[int, Field(ge=0, le=24 * 62)] = 48,
    ledger: BlockName = "default",
    rate_card: BlockName = "default",
    budgets: BlockName = "default",
    alert_routes: BlockName = "default",
    contacts: BlockName = "default",
    statements_dir: Path = Path(".gpuflows/reports/statements"),  # noqa: B008 - an immutable default
) -> RollupSummary:
    """Recompute the daily rollup of the open days of a period: GPU-hours, customer cost, supplier payout,
    margin and idle capacity; then budget alerts and per-customer statements. Idempotent; closed days are
    never rewritten.

    Args:
        first_day: First day (UTC) to recompute; default yesterday. The demo ledger's usage is in
            2024-11-15..2024-11-26 (Alibaba trace) and 2020-05-01..2020-05-31 (Helios clusters).
        last_day: Last day, inclusive; default today. Not before first_day.
        close: First close every day whose grace window has passed (the daily close).
        grace_hours: How long after a day ends its late usage is still billed on the day itself.
        ledger: Name of the LedgerDatabase block.
        rate_card: Name of the RateCard block.
        budgets: Name of the Budgets block.
        alert_routes: Name of the AlertRoutes block (Apprise URLs by channel).
        contacts: Name of the Contacts block: each customer's own channels (it hears its own alerts).
        statements_dir: Where the per-customer CSV statements are written.
    """
    logger = get_run_logger()
    billing = billing_resources(ledger, rate_card, budgets, alert_routes, contacts)  # each block loaded once
    today = datetime.now(UTC).date()
    first_day, last_day = first_day or today - timedelta(days=1), last_day or today
    if first_day > last_day:
        raise InputError(f"first_day {first_day} is after last_day {last_day}")
    if close:
        closed = close_task(grace_hours, billing)
        logger.info(
            "closed %d day(s)%s", len(closed), f": {closed[0].day}..{closed[-1].day}" if closed else ""
        )
        if closed:
            create_table_artifact(
                key="billing-close",
                table=[{k: str(v) for k, v in asdict(c).items()} for c in closed],
                description=f"closed through {closed[-1].day}; later usage for them becomes adjustments",
            )
    summary = roll_up_task(first_day, last_day, billing)
    logger.info(
        "%s..%s: %d open day(s) recomputed, %d closed left as they are; %s GPU-h, cost %s %s, payout %s, "
        "margin %s, adjustments %s",
        first_day,
        last_day,
        summary.recomputed_days,
        summary.closed_days_skipped,
        summary.gpu_hours,
        summary.customer_cost,
        summary.currency,
        summary.supplier_payout,
        summary.margin,
        summary.adjustments_cost,
    )
    months = sorted({month_bounds(first_day)[0], month_bounds(last_day)[0]})
    alerts = budgets_task(months, billing)
    for alert in alerts:
        logger.info("budget %s %d%%: %s", alert.budget.scope, alert.threshold, alert.status)
    settled = statements_task(first_day, last_day, billing, statements_dir)
    invoices = [st for st in settled if st.kind == "invoice"]
    payouts = [st for st in settled if st.kind == "payout"]
    create_table_artifact(
        key="billing-rollup",
        table=[row for st in invoices for row in line_table(st)]
        or [{k: str(v) for k, v in asdict(summary).items()}],
        description=f"{first_day}..{last_day}: {summary.customer_cost} {summary.currency} billed "
        f"({summary.adjustments_cost} in adjustments), {summary.supplier_payout} paid out, margin "
        f"{summary.margin}; each month's total is its exact total rounded once, and its lines add up to it; "
        f"{len(alerts)} budget alert(s) decided",
    )
    create_table_artifact(
        key="billing-payouts",
        table=[row for st in payouts for row in line_table(st)] or [{"supplier": "", "note": "no usage"}],
        description=f"{first_day}..{last_day}: supplier payout lines, with declared capacity and idle "
        f"GPU-hours (negative idle: usage above the declared capacity)",
    )
    return summary
