"""Benchmarks behind `python -m fbhelpers bench` (README §Performance)."""
