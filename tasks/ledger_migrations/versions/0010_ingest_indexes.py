"""usage_events loses ix_usage_events_customer_start (customer, start_at): no query reads it (rollups read
ix_usage_events_day_groups, the forecast ix_usage_events_start_at), and every ingested event paid for it, one
B-tree of seven (the README's ingest benchmark).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_usage_events_customer_start", "usage_events")


def downgrade() -> None:
    op.create_index("ix_usage_events_customer_start", "usage_events", ["customer", "start_at"])
