"""Every table of the ledger database, in one place: the usage ledger, billing, capacity, budget and forecast
alerts, stored forecasts and the audit trail. Alembic's `target_metadata` is this module's `metadata`, so a
fresh process sees the whole schema. Revisions in tasks/ledger_migrations create and change them."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

metadata = sa.MetaData()


# ---------- the usage ledger: events, quarantined rows, ingest batches
usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("customer", sa.String(200), nullable=False),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("job", sa.String(200), nullable=False),
    sa.Column("supplier", sa.String(200), nullable=False),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("gpu_type", sa.String(50), nullable=False),
    sa.Column("gpu_count", sa.Numeric(12, 6), nullable=False),  # fractional: a shared GPU
    sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("batch_id", sa.Integer, nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    # Derived at ingest (revision 0003): what a rollup groups and sums without touching timestamps.
    sa.Column("start_day", sa.Date, nullable=False),
    sa.Column("end_day", sa.Date, nullable=False),  # the day of the last instant (end is exclusive)
    sa.Column("gpu_microseconds", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("source", "event_id", name="uq_usage_events_source_event"),
)

# The ledger's columns an ingest batch carries (tasks/billing/staging.py), in the order it sends them.
STAGED_COLUMNS = (
    "source", "event_id", "customer", "project", "job", "supplier", "node", "gpu_type", "gpu_count",
    "start_at", "end_at", "start_day", "end_day", "gpu_microseconds",
)  # fmt: skip


# An event either begins and ends on one UTC day, or crosses midnight (a few in a thousand). Readers of a
# range of days take the two apart, so each part is read through its own index (revisions 0003 and 0011):
# the day index, and the partial ix_usage_events_multi_day.
def single_day(first_day: date, last_day: date) -> tuple[sa.ColumnElement[bool], ...]:
    """Events that begin and end on one day of first_day..last_day."""
    e = usage_events.c
    return e.start_day.between(first_day, last_day), e.end_day == e.start_day


def over_midnight(first_day: date, last_day: date) -> tuple[sa.ColumnElement[bool], ...]:
    """Events over midnight that touch a day of first_day..last_day, however long ago they began."""
    e = usage_events.c
    return e.end_day >= first_day, e.start_day <= last_day, e.start_day != e.end_day


quarantine = sa.Table(
    "usage_quarantine",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("batch_id", sa.Integer, nullable=False),
    sa.Column("file", sa.String(500), nullable=False),
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
)

usage_conflicts = sa.Table(
    "usage_conflicts",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("batch_id", sa.Integer, nullable=False),
    sa.Column("file", sa.String(500), nullable=False),
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("differences", sa.Text, nullable=False),  # what the row says against what the ledger holds
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

ingest_batches = sa.Table(
    "ingest_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file", sa.String(500), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("conflicts", sa.Integer, nullable=False, server_default="0"),  # revision 0006
)


# ---------- billing: daily rollups, periods, adjustments, runs
# Amounts in daily and adjustment rows are unrounded (display only; revision 0008): the exact amount is
# gpu_microseconds x price / 3.6e9, and cents are decided once per invoice line (tasks/billing/invoices.py).
# Rows from before 0008 have NULL microseconds and prices and keep their cent amounts.
EXACT = sa.Numeric(24, 12)
PRICE = sa.Numeric(12, 6)
customer_daily = sa.Table(
    "billing_customer_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("customer", sa.String(200), primary_key=True),
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("gpu_type", sa.String(50), primary_key=True),
    sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
    sa.Column("customer_cost", EXACT, nullable=False),
    sa.Column("supplier_payout", EXACT, nullable=False),
    sa.Column("margin", EXACT, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("gpu_microseconds", sa.BigInteger, nullable=True),
    sa.Column("customer_price", PRICE, nullable=True),
    sa.Column("supplier_price", PRICE, nullable=True),
)

supplier_daily = sa.Table(
    "billing_supplier_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("supplier", sa.String(200), primary_key=True),
    sa.Column("gpu_type", sa.String(50), primary_key=True),
    sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
    sa.Column("supplier_payout", EXACT, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("capacity_gpu_hours", sa.Numeric(18, 6), nullable=True),  # NULL: no capacity declared
    sa.Column("idle_gpu_hours", sa.Numeric(18, 6), nullable=True),
    sa.Column("gpu_microseconds", sa.BigInteger, nullable=True),
    sa.Column("supplier_price", PRICE, nullable=True),
)

periods = sa.Table(
    "billing_periods",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_batch_id", sa.Integer, nullable=False),
)

adjustments = sa.Table(
    "billing_adjustments",
    metadata,
    sa.Column("billed_day", sa.Date, primary_key=True),
    sa.Column("usage_day", sa.Date, primary_key=True),
    sa.Column("customer", sa.String(200), primary_key=True),
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("gpu_type", sa.String(50), primary_key=True),
    sa.Column("supplier", sa.String(200), primary_key=True),
    sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
    sa.Column("customer_cost", EXACT, nullable=False),
    sa.Column("supplier_payout", EXACT, nullable=False),
    sa.Column("margin", EXACT, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("gpu_microseconds", sa.BigInteger, nullable=True),
    sa.Column("customer_price", PRICE, nullable=True),
    sa.Column("supplier_price", PRICE, nullable=True),
)

billing_runs = sa.Table(
    "billing_runs",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("first_day", sa.Date, nullable=True),
    sa.Column("last_day", sa.Date, nullable=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
)


# ---------- supplier capacity
supplier_capacity = sa.Table(
    "supplier_capacity",
    metadata,
    sa.Column("supplier", sa.String(200), primary_key=True),
    sa.Column("node", sa.String(200), primary_key=True),
    sa.Column("valid_from", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),  # open-ended when NULL
    sa.Column("gpu_type", sa.String(50), nullable=False),
    sa.Column("gpu_count", sa.Numeric(12, 6), nullable=False),
)


# ---------- budget alerts (claimed once per decision)
budget_alerts = sa.Table(
    "budget_alerts",
    metadata,
    sa.Column("customer", sa.String(200), primary_key=True),
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("month", sa.Date, primary_key=True),
    sa.Column("threshold", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("urgency", sa.String(20), nullable=False),
    sa.Column("spend", sa.Numeric(14, 2), nullable=False),
    sa.Column("budget", sa.Numeric(14, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


# ---------- stored forecasts and forecast alerts
usage_forecasts = sa.Table(
    "usage_forecasts",
    metadata,
    sa.Column("series", sa.String(260), primary_key=True),
    sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("model", sa.String(40), nullable=False),
    sa.Column("mean", sa.Float, nullable=False),
    sa.Column("lower80", sa.Float, nullable=False),
    sa.Column("upper80", sa.Float, nullable=False),
    sa.Column("lower95", sa.Float, nullable=False),
    sa.Column("upper95", sa.Float, nullable=False),
    sa.Column("lower99", sa.Float, nullable=False),
    sa.Column("upper99", sa.Float, nullable=False),
    sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
)

forecast_alerts = sa.Table(
    "forecast_alerts",
    metadata,
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("scope", sa.String(260), primary_key=True),
    sa.Column("period", sa.String(40), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("urgency", sa.String(20), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


# ---------- documents delivered to customers and suppliers: once per (recipient, document, period)
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("kind", sa.String(20), primary_key=True),  # customer or supplier
    sa.Column("recipient", sa.String(200), primary_key=True),  # its id, never an address
    sa.Column("document", sa.String(20), primary_key=True),  # invoice, payout, forecast
    sa.Column("period", sa.String(40), primary_key=True),  # 2026-05 (a month) or 2026-W21 (a week)
    sa.Column("status", sa.String(20), nullable=False),  # pending, sent, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # what was sent, or why it failed (no secrets)
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


# ---------- the audit trail (append-only: triggers refuse UPDATE and DELETE)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("flow", sa.String(200), nullable=True),
    sa.Column("deployment", sa.String(300), nullable=True),
    sa.Column("flow_run_id", sa.String(40), nullable=True),
    sa.Column("trigger", sa.String(40), nullable=True),
    sa.Column("state", sa.String(40), nullable=True),
    sa.Column("detail", sa.Text, nullable=False),
)
