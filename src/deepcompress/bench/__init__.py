"""Benchmarks that back the README's speed claims (paper section 6): fc layers and whole models."""

from deepcompress.bench.fc import PAPER_LAYERS, plot_fc, run_fc_benchmark

__all__ = ["PAPER_LAYERS", "plot_fc", "run_fc_benchmark"]
