"""Benchmarks: each figure is reported beside the raw limit measured in the same run."""
