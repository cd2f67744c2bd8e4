"""Benchmarks: aggregation of run directories into tables (suites and the runner build on it)."""
