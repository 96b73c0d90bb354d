"""Flow `usage-forecast`: ledger → hourly series → models scored by backtest, combined (both cores) → anomaly
checks → stored forecasts → customer and supplier reports → budget-pace alerts."""

from __future__ import annotations

import base64
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.audit_hooks import AUDITED
from flows.delivery import deliver_task, missing_contacts, report
from flows.parameters import BlockName, IsoDateTime, Outage
from flows.resources import Billing, billing_resources
from tasks.alerts import AlertDeliveryError
from tasks.billing.deliveries import Delivered, Outgoing
from tasks.billing.statements import safe_name
from tasks.contacts import Directory
from tasks.forecast.alerts import Decided
from tasks.forecast.batch import forecast_many
from tasks.forecast.models import SeriesForecast
from tasks.forecast.outlook import (
    ForecastSummary,
    alert_anomalies,
    alert_pace,
    customer_outlooks,
    plan_jobs,
    supplier_outlooks,
)
from tasks.forecast.reports import (
    CustomerOutlook,
    SupplierOutlook,
    customer_chart,
    customer_csv,
    customer_markdown,
    supplier_csv,
    supplier_markdown,
)
from tasks.forecast.series import WindowUsage, floor_hour, hourly_series
from tasks.forecast.store import store_forecasts
from tasks.forecast.weekly import week_of, weekly_outgoing


def artifact_key(prefix: str, owner: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only; the hash in safe_name (of the
    exact id, case included) keeps `ACME` and `acme` apart."""
    readable, digest = safe_name(owner).rsplit("-", 1)
    readable = re.sub(r"[^a-z0-9-]+", "-", readable.lower()).strip("-")
    return f"{prefix}-{readable[: 100 - len(prefix) - len(digest) - 2]}-{digest}"


@task(name="build-series", cache_policy=NO_CACHE)
def build_series_task(billing: Billing, as_of: datetime, history_days: int) -> WindowUsage:
    return hourly_series(billing.engine, as_of - timedelta(days=history_days), as_of)


@task(name="fit-and-forecast", cache_policy=NO_CACHE)
def forecast_task(
    window: WindowUsage,
    as_of: datetime,
    horizon: int,
    method: str,
    outages: list[tuple[datetime, datetime]],
) -> list[SeriesForecast]:
    return forecast_many(plan_jobs(window, as_of, horizon, method, outages))


@task(name="check-anomalies", cache_policy=NO_CACHE)
def anomalies_task(billing: Billing, window: WindowUsage, as_of: datetime) -> list[Decided]:
    return alert_anomalies(billing.engine, window, as_of, billing.send)


@task(name="store-forecasts", cache_policy=NO_CACHE)
def store_task(billing: Billing, forecasts: list[SeriesForecast], as_of: datetime) -> int:
    return store_forecasts(billing.engine, forecasts, as_of)


def chart_markdown(chart: Path, customer: str) -> str:
    """The chart inside the artifact (the UI cannot read the server's files), and where its file is."""
    encoded = base64.b64encode(chart.read_bytes()).decode("ascii")
    image = f"![{customer}: usage and forecast](data:image/png;base64,{encoded})"
    return f"\n\n{image}\n\nChart file: `{chart}`\n"


@task(name="reports-and-pace-alerts", cache_policy=NO_CACHE)
def reports_task(
    billing: Billing,
    window: WindowUsage,
    forecasts: list[SeriesForecast],
    as_of: datetime,
    report_customers: int,
    reports_dir: Path,
) -> tuple[list[CustomerOutlook], list[SupplierOutlook], list[Decided]]:
    engine, rates, currency = billing.engine, billing.prices.rates, billing.prices.currency
    lines = billing.budgets.lines
    by_key = {f.key: f for f in forecasts}
    customers = customer_outlooks(engine, window, by_key, rates, as_of, lines, currency)
    with_budget = {b.customer for b in lines}
    ranked = sorted(customers, key=lambda o: (o.customer not in with_budget, -float(o.history.sum())))
    for outlook in ranked[:report_customers]:  # CSV, chart and UI artifact: budgets first, then the busiest
        customer_csv(outlook, reports_dir / "customers")
        chart = customer_chart(outlook, reports_dir / "customers")
        create_markdown_artifact(
            key=artifact_key("forecast-customer", outlook.customer),
            markdown=customer_markdown(outlook) + chart_markdown(chart, outlook.customer),
            description=f"{outlook.customer}: usage forecast and projected month-end cost",
        )
    for outlook in ranked[report_customers:]:
        customer_csv(outlook, reports_dir / "customers")
    suppliers = supplier_outlooks(engine, window, by_key, rates, as_of, currency)
    supplier_csv(suppliers, reports_dir / "suppliers")
    for outlook in suppliers:
        create_markdown_artifact(
            key=artifact_key("forecast-supplier", outlook.supplier),
            markdown=supplier_markdown(outlook),
            description=f"{outlook.supplier}: utilisation, idle capacity, forecast demand and payout",
        )
    paced = alert_pace(engine, customers, lines, as_of, billing.send)
    return customers, suppliers, paced


@task(name="weekly-reports", cache_policy=NO_CACHE)
def weekly_task(
    customers: list[CustomerOutlook],
    suppliers: list[SupplierOutlook],
    people: Directory,
    as_of: datetime,
    reports_dir: Path,
) -> tuple[list[Outgoing], list[Delivered]]:
    outgoing, missing = weekly_outgoing(customers, suppliers, people, reports_dir / "weekly", as_of)
    week = week_of(as_of)
    return outgoing, [d for kind, owners in missing for d in missing_contacts(kind, "forecast", owners, week)]


@flow(
    name="usage-forecast",
    flow_run_name="forecast-{horizon_hours}h",
    validate_parameters=True,
    **AUDITED,
)
def usage_forecast(
    horizon_hours: Annotated[int, Field(ge=1, le=168)] = 24,
    as_of: IsoDateTime | None = None,
    history_days: Annotated[int, Field(ge=2, le=90)] = 28,
    report_customers: Annotated[int, Field(ge=0, le=500)] = 20,
    method: Literal["combination", "best"] = "combination",
    ledger: BlockName = "default",
    rate_card: BlockName = "default",
    budgets: BlockName = "default",
    alert_routes: BlockName = "default",
    contacts: BlockName = "default",
    reports_dir: Path = Path(".gpuflows/reports/forecast"),  # noqa: B008 - an immutable default
    outages: list[Outage] | None = None,
    deliver_reports: bool = False,
) -> ForecastSummary:
    """Forecast GPU usage per customer, supplier, GPU type and in total; report to customers and suppliers;
    alert when a budget is on pace to be exceeded or an hour's usage leaves the forecast's 99 % band.

    Args:
        horizon_hours: How far ahead (hours) the forecast and the supplier outlook look.
        as_of: The forecast starts at this hour (UTC); default the current hour. Past values replay history:
            on the demo ledger, 2020-05-29T00:00:00Z (Helios clusters) or 2024-11-26T00:00:00Z (Alibaba).
        history_days: Days of hourly history each model is fitted on.
        report_customers: Customers with a chart and a UI artifact (budgets first, then the busiest); every
            active customer gets a CSV.
        method: `combination` (default): the mean of the models and seasonal naive, the worst on each
            series' backtest left out, then the current regime (idle stays idle, a cluster that woke up is
            forecast at its new level). `best`: the single model with the lowest backtest MASE, never worse
            than seasonal naive there.
        ledger: Name of the LedgerDatabase block.
        rate_card: Name of the RateCard block.
        budgets: Name of the Budgets block.
        alert_routes: Name of the AlertRoutes block.
        contacts: Name of the Contacts block: each customer's own channels (it hears its own alerts).
        reports_dir: Where the CSV and PNG reports are written.
        deliver_reports: Email each customer and supplier that asked for one (Contacts block) its own
            report: chart, table and projected month end. Once per recipient and ISO week (the weekly
            schedule sets it).
        outages: Platform outages the operator declares (start, end; UTC): those hours are filled for
            fitting and never scored. A quiet cluster is not an outage: its zeros are data.
    """
    logger = get_run_logger()
    billing = billing_resources(ledger, rate_card, budgets, alert_routes, contacts)  # each block loaded once
    start = floor_hour(as_of)
    window = build_series_task(billing, start, history_days)
    declared = [(o.start, o.end) for o in outages or []]
    forecasts = forecast_task(window, start, horizon_hours, method, declared)
    models = Counter(f.model for f in forecasts)
    fallbacks = [f for f in forecasts if f.reason.startswith("fallback")]
    logger.info("%d series fitted: %s; %d fallbacks", len(forecasts), dict(models), len(fallbacks))
    anomalies = anomalies_task(billing, window, start)
    store_task(billing, forecasts, start)
    customers, suppliers, paced = reports_task(
        billing, window, forecasts, start, report_customers, reports_dir
    )
    delivered: list[Delivered] = []
    if deliver_reports:  # the weekly schedule: each customer and supplier that asked gets its own report
        people = billing.people()
        outgoing, delivered = weekly_task(customers, suppliers, people, start, reports_dir)
        delivered = deliver_task(billing.engine, people, outgoing) + delivered
    create_table_artifact(
        key="usage-forecast",
        table=[
            {
                "series": f.key,
                "model": f.model,
                "why": f.reason,
                f"next {horizon_hours} h GPU-h": round(f.total(), 3),
                "outages": len(f.cleaned.outages),
            }
            for f in forecasts
        ],
        description=f"as of {start:%Y-%m-%d %H:00} UTC: {len(forecasts)} series, "
        f"{len(anomalies)} anomaly and {len(paced)} pace alert(s)",
    )
    if deliver_reports:
        sent = sum(d.status == "sent" for d in delivered)
        report("deliveries-forecast", delivered, f"week {week_of(start)}: {sent} forecast report(s) sent")
    failed = [d for d in anomalies + paced if d.status == "failed"]
    if failed:  # recorded as failed and retried next run; the run itself must show it
        raise AlertDeliveryError(
            f"{len(failed)} forecast alert(s) not delivered: "
            + ", ".join(f"{d.kind} {d.scope} {d.period}" for d in failed)
        )
    return ForecastSummary(
        start,
        horizon_hours,
        len(forecasts),
        dict(models),
        len(fallbacks),
        len(anomalies),
        len(paced),
        len(customers),
        len(suppliers),
        sum(d.status == "sent" for d in delivered),
    )
