"""Benchmarks, one per performance target; `python -m benchmarks` (or `make bench`) runs them all."""

import os

# Before Prefect is imported: its temporary servers must not try to phone home (there is no network).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
