"""Benchmarks of signoff against bare Temporal; run them with `make bench` (see README.md)."""
