"""Benchmarks of the staging cycle (scripts that print figures; see benchmarks/README.md)."""
