"""Benchmark scripts (not tests): see benchmarks/README.md."""
