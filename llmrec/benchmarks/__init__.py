"""Benchmarks that run llmrec's own recipes' pieces side by side (behind ``scripts/bench_*.py``)."""
