"""Throughput and memory benchmarks (not part of the test suite). Ratios, measured in one run."""
