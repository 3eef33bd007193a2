"""Stage timings, Prometheus metrics and the benchmark report."""
