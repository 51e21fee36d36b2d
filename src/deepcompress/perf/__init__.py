"""The measurements behind the README's speed and memory claims (paper section 6 and Tables 4-5).

Library code, installed with the package: ``deepcompress bench fc|inference|scale`` runs :mod:`.fc`,
:mod:`.networks` and :mod:`.scale` here. The repository's top-level ``benchmarks/`` holds the scripts that call these (and
the stand-alone coder and k-means comparisons) and their ``results/*.json``.
"""

from deepcompress.perf.fc import PAPER_LAYERS, plot_fc, run_fc_benchmark
from deepcompress.perf.latency import energy_estimate, whole_model_latency
from deepcompress.perf.networks import run_inference_benchmark

__all__ = ["PAPER_LAYERS", "energy_estimate", "plot_fc", "run_fc_benchmark", "run_inference_benchmark",
           "whole_model_latency"]
