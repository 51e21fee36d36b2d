"""Benchmarks that back the README's speed claims (paper section 6): fc layers and whole models."""

from deepcompress.bench.fc import PAPER_LAYERS, plot_fc, run_fc_benchmark
from deepcompress.bench.latency import energy_estimate, whole_model_latency

__all__ = ["PAPER_LAYERS", "energy_estimate", "plot_fc", "run_fc_benchmark", "whole_model_latency"]
