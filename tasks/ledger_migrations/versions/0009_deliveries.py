"""Documents delivered to customers and suppliers (invoices, payout statements, forecast reports): one row per
recipient, document and period, claimed before sending, so a re-run never sends twice and a failure is
retried.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("recipient", sa.String(200), primary_key=True),
        sa.Column("document", sa.String(20), primary_key=True),
        sa.Column("period", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deliveries")
