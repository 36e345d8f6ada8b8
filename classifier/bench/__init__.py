"""Benchmarks of the ML core against the shared datasets (run as `python -m classifier.bench.…`)."""
