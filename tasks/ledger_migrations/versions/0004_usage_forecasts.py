"""Forecasts per series and hour (what anomaly checks compare against) and forecast-driven alerts.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_forecasts",
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
    op.create_table(
        "forecast_alerts",
        sa.Column("kind", sa.String(20), primary_key=True),  # pace, anomaly
        sa.Column("scope", sa.String(260), primary_key=True),  # budget scope or series key
        sa.Column("period", sa.String(40), primary_key=True),  # month (pace) or hour (anomaly)
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("urgency", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forecast_alerts")
    op.drop_table("usage_forecasts")
