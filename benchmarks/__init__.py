"""Benchmark commands (`python -m benchmarks.<name>`) and the clients and statistics they share."""
