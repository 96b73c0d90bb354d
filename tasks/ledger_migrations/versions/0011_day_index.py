"""usage_events loses ix_usage_events_start_at everywhere and, on PostgreSQL, trades
ix_usage_events_day_groups for ix_usage_events_start_day: the key start_day alone, the rest included.

- The forecast window now reads single-day events by start_day and multi-day ones by
  ix_usage_events_multi_day (tasks/forecast/series.window_events), so start_at needs no index of its own.
- On PostgreSQL the 7-column key (start_day, four text columns, ...) cost each ingested event about 8 µs of
  the server's time, a third of the insert: text comparisons on the way down and a place in the middle of
  its day, with page splits and their WAL. Keyed by the day alone, a new event goes at the end of its day
  (the heap position breaks ties). The included columns let a day's events be read from the index alone and
  grouped by hash; measured per 50,000-event insert: 0.7-0.8 s with this index, the same as with a bare
  start_day key, against 1.0 s with the 7-column key. SQLite has neither INCLUDE nor a hash aggregate:
  without the covering order its full rollup of 1 M events took 17 s instead of 13, so SQLite keeps the
  wide index, whose leading start_day serves the forecast.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

DAY_GROUPS = ["start_day", "customer", "project", "gpu_type", "supplier", "end_day", "gpu_microseconds"]


def upgrade() -> None:
    op.drop_index("ix_usage_events_start_at", "usage_events")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_usage_events_day_groups", "usage_events")
        op.create_index(
            "ix_usage_events_start_day", "usage_events", ["start_day"], postgresql_include=DAY_GROUPS[1:]
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_usage_events_start_day", "usage_events")
        op.create_index("ix_usage_events_day_groups", "usage_events", DAY_GROUPS)
    op.create_index("ix_usage_events_start_at", "usage_events", ["start_at"])
