"""Runnable benchmarks, one module per figure; see bench/README.md. Never imported by drip."""
