"""Rerunnable benchmarks. Each reports ratios against a reference timed in the
same run, because shared machines are noisy: `python -m experiments.bench --help`."""
