"""Benchmarks of the engine (issue 9): ``python -m benchmarks``; see benchmarks/README.md."""
