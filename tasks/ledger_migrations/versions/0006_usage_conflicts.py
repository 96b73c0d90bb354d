"""Usage conflicts: the same (source, event id) sent again with different content is kept and reported, never
silently dropped as a duplicate nor billed twice.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_conflicts",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Integer, nullable=False),
        sa.Column("file", sa.String(500), nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("differences", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("ingest_batches") as batch:
        batch.add_column(sa.Column("conflicts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ingest_batches") as batch:
        batch.drop_column("conflicts")
    op.drop_table("usage_conflicts")
