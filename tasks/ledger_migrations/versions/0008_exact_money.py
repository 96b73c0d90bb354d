"""Exact money: daily and adjustment rows keep their integer GPU-microseconds and the prices they were billed
at, and their amounts unrounded (12 decimals, display only); cents are decided once, per invoice line.

Rows written before this revision keep their cent amounts and have no microseconds or prices (NULL).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD, NEW = sa.Numeric(14, 2), sa.Numeric(24, 12)
MONEY = {
    "billing_customer_daily": ("customer_cost", "supplier_payout", "margin"),
    "billing_adjustments": ("customer_cost", "supplier_payout", "margin"),
    "billing_supplier_daily": ("supplier_payout",),
}


def upgrade() -> None:
    for table, money in MONEY.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("gpu_microseconds", sa.BigInteger, nullable=True))
            if table != "billing_supplier_daily":
                batch.add_column(sa.Column("customer_price", sa.Numeric(12, 6), nullable=True))
            batch.add_column(sa.Column("supplier_price", sa.Numeric(12, 6), nullable=True))
            for column in money:
                batch.alter_column(column, type_=NEW, existing_type=OLD, existing_nullable=False)


def downgrade() -> None:
    for table, money in MONEY.items():
        with op.batch_alter_table(table) as batch:
            for column in money:
                batch.alter_column(column, type_=OLD, existing_type=NEW, existing_nullable=False)
            batch.drop_column("supplier_price")
            if table != "billing_supplier_daily":
                batch.drop_column("customer_price")
            batch.drop_column("gpu_microseconds")
