"""Benchmarks, load tests and the model stub that lets the real SDK run offline."""
