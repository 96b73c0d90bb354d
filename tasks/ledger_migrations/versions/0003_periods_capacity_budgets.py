"""Billing periods (close, adjustments), supplier capacity, budget alerts, and per-event day columns.

Revision ID: 0003
Revises: 0002

usage_events gains start_day / end_day (UTC days of its first and last instant) and gpu_microseconds
(GPU count x duration, an integer: exact sums on both databases), with indexes that let a rollup read one
day, or the few events that cross midnight, without scanning the ledger. Existing rows are backfilled.
"""

from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("start_day", sa.Date, nullable=True))
        batch.add_column(sa.Column("end_day", sa.Date, nullable=True))
        batch.add_column(sa.Column("gpu_microseconds", sa.BigInteger, nullable=True))
    _backfill()
    with op.batch_alter_table("usage_events") as batch:
        batch.alter_column("start_day", nullable=False)
        batch.alter_column("end_day", nullable=False)
        batch.alter_column("gpu_microseconds", nullable=False)
    # One day's single-day events, read in group order without a sort.
    op.create_index(
        "ix_usage_events_day_groups",
        "usage_events",
        ["start_day", "customer", "project", "gpu_type", "supplier", "end_day", "gpu_microseconds"],
    )
    op.create_index("ix_usage_events_batch", "usage_events", ["batch_id"])
    op.create_index(
        "ix_usage_events_multi_day",
        "usage_events",
        ["end_day"],
        sqlite_where=sa.text("start_day <> end_day"),
        postgresql_where=sa.text("start_day <> end_day"),
    )
    op.add_column("billing_supplier_daily", sa.Column("capacity_gpu_hours", sa.Numeric(18, 6), nullable=True))
    op.add_column("billing_supplier_daily", sa.Column("idle_gpu_hours", sa.Numeric(18, 6), nullable=True))
    op.create_table(
        "billing_periods",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_batch_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "billing_adjustments",
        sa.Column("billed_day", sa.Date, primary_key=True),
        sa.Column("usage_day", sa.Date, primary_key=True),
        sa.Column("customer", sa.String(200), primary_key=True),
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("gpu_type", sa.String(50), primary_key=True),
        sa.Column("supplier", sa.String(200), primary_key=True),
        sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
        sa.Column("customer_cost", sa.Numeric(14, 2), nullable=False),
        sa.Column("supplier_payout", sa.Numeric(14, 2), nullable=False),
        sa.Column("margin", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "supplier_capacity",
        sa.Column("supplier", sa.String(200), primary_key=True),
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gpu_type", sa.String(50), nullable=False),
        sa.Column("gpu_count", sa.Numeric(12, 6), nullable=False),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("customer", sa.String(200), primary_key=True),
        sa.Column("project", sa.String(200), primary_key=True),  # "*": the customer's whole budget
        sa.Column("month", sa.Date, primary_key=True),
        sa.Column("threshold", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),  # pending, sent, suppressed, failed
        sa.Column("urgency", sa.String(20), nullable=False),
        sa.Column("spend", sa.Numeric(14, 2), nullable=False),
        sa.Column("budget", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "billing_runs",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("first_day", sa.Date, nullable=True),
        sa.Column("last_day", sa.Date, nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )


def _backfill() -> None:
    connection = op.get_bind()
    events = sa.table(
        "usage_events",
        sa.column("id"),
        sa.column("start_at", sa.DateTime(timezone=True)),
        sa.column("end_at", sa.DateTime(timezone=True)),
        sa.column("gpu_count", sa.Numeric(12, 6)),
        sa.column("start_day", sa.Date),
        sa.column("end_day", sa.Date),
        sa.column("gpu_microseconds", sa.BigInteger),
    )
    rows = connection.execute(sa.select(events.c.id, events.c.start_at, events.c.end_at, events.c.gpu_count))
    updates = []
    for row in rows:
        duration = row.end_at - row.start_at
        micro = duration // timedelta(microseconds=1)
        updates.append(
            {
                "row_id": row.id,
                "start_day": row.start_at.date(),
                "end_day": (row.end_at - timedelta(microseconds=1)).date(),
                "gpu_microseconds": int(
                    (Decimal(micro) * Decimal(str(row.gpu_count))).quantize(1, ROUND_HALF_EVEN)
                ),
            }
        )
    if updates:
        connection.execute(
            events.update()
            .where(events.c.id == sa.bindparam("row_id"))
            .values(
                start_day=sa.bindparam("start_day"),
                end_day=sa.bindparam("end_day"),
                gpu_microseconds=sa.bindparam("gpu_microseconds"),
            ),
            updates,
        )


def downgrade() -> None:
    for table in (
        "billing_runs",
        "budget_alerts",
        "supplier_capacity",
        "billing_adjustments",
        "billing_periods",
    ):
        op.drop_table(table)
    with op.batch_alter_table("billing_supplier_daily") as batch:
        batch.drop_column("idle_gpu_hours")
        batch.drop_column("capacity_gpu_hours")
    op.drop_index("ix_usage_events_multi_day", "usage_events")
    op.drop_index("ix_usage_events_batch", "usage_events")
    op.drop_index("ix_usage_events_day_groups", "usage_events")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("gpu_microseconds")
        batch.drop_column("end_day")
        batch.drop_column("start_day")
