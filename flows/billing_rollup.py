"""Flow `billing-rollup`: price the ledger's usage per day, per customer/project/GPU type and per supplier."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.ledger import LedgerDatabase
from blocks.rate_card import RateCard
from tasks.ledger import connect
from tasks.rollup import RollupSummary, customer_rows, rates_from, rollup_days
from tasks.statements import write_statements


def roll_up(first_day: date, last_day: date, ledger: str, rate_card: str) -> tuple[RollupSummary, list[dict]]:
    card = RateCard.load(rate_card)
    rates = rates_from(card.rates)
    engine = connect(LedgerDatabase.load(ledger).url.get_secret_value())
    summary = rollup_days(engine, first_day, last_day, rates, card.currency)
    return summary, customer_rows(engine, first_day, last_day)


roll_up_task = task(roll_up, name="roll-up-days", cache_policy=NO_CACHE)


@flow(name="billing-rollup", flow_run_name="rollup-{first_day}-{last_day}", validate_parameters=True)
def billing_rollup(
    first_day: date | None = None,
    last_day: date | None = None,
    ledger: str = "default",
    rate_card: str = "default",
    statements_dir: Path = Path(".gpuflows/reports/statements"),  # noqa: B008 - an immutable default
) -> RollupSummary:
    """Recompute the daily rollup of a period from the ledger: GPU-hours, customer cost, supplier payout and
    margin. Idempotent: a re-run of any period gives identical rows.

    Args:
        first_day: First day (UTC) to recompute; default yesterday.
        last_day: Last day, inclusive; default today.
        ledger: Name of the LedgerDatabase block.
        rate_card: Name of the RateCard block.
        statements_dir: Where the per-customer CSV statements are written.
    """
    today = datetime.now(UTC).date()
    first_day, last_day = first_day or today - timedelta(days=1), last_day or today
    summary, rows = roll_up_task(first_day, last_day, ledger, rate_card)
    get_run_logger().info(
        "%s..%s: %s GPU-h, cost %s %s, payout %s, margin %s",
        first_day,
        last_day,
        summary.gpu_hours,
        summary.customer_cost,
        summary.currency,
        summary.supplier_payout,
        summary.margin,
    )
    statements = write_statements(rows, statements_dir, first_day, last_day)
    get_run_logger().info("%d customer statement(s) in %s", len(statements), statements_dir)
    create_table_artifact(
        key="billing-rollup",
        table=[{k: str(v) for k, v in row.items() if k != "computed_at"} for row in rows]
        or [asdict(summary)],
        description=f"{first_day}..{last_day}: {summary.customer_cost} {summary.currency} billed, "
        f"{summary.supplier_payout} paid out; a re-run gives identical totals",
    )
    return summary
