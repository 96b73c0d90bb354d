"""Benchmarks, one per performance target; `python -m benchmarks` (or `make bench`) runs them all."""
