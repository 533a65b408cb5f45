"""Benchmark scripts and the frozen baselines they measure against (see bench/README.md)."""
