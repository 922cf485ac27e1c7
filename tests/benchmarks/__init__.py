"""Benchmarks: figures for the README, not pass/fail timings (see conftest.py for how they run)."""
