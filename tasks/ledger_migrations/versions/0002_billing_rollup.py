"""Daily billing rollups per customer/project/GPU type and per supplier/GPU type.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_customer_daily",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("customer", sa.String(200), primary_key=True),
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("gpu_type", sa.String(50), primary_key=True),
        sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
        sa.Column("customer_cost", sa.Numeric(14, 2), nullable=False),
        sa.Column("supplier_payout", sa.Numeric(14, 2), nullable=False),
        sa.Column("margin", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "billing_supplier_daily",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("supplier", sa.String(200), primary_key=True),
        sa.Column("gpu_type", sa.String(50), primary_key=True),
        sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
        sa.Column("supplier_payout", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("billing_supplier_daily")
    op.drop_table("billing_customer_daily")
