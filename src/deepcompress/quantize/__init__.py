"""Trained quantization / weight sharing (Deep Compression section 3)."""

from deepcompress.quantize.apply import (
    quantization_report,
    quantize_,
    quantized_layers,
    strip_quantization_,
)
from deepcompress.quantize.auto import bits_scan, choose_bits, plan_bits
from deepcompress.quantize.export import export_compressed, share_biases_, stored_as_is
from deepcompress.quantize.config import CentroidInit, GradReduction, QuantizeConfig
from deepcompress.quantize.init import density_init, forgy_init, init_centroids, kmeanspp_init, linear_init
from deepcompress.quantize.kmeans import KMeans1D
from deepcompress.quantize.shared import SharedWeight, codebook_of

__all__ = [
    "CentroidInit",
    "GradReduction",
    "KMeans1D",
    "QuantizeConfig",
    "SharedWeight",
    "bits_scan",
    "choose_bits",
    "codebook_of",
    "density_init",
    "export_compressed",
    "forgy_init",
    "init_centroids",
    "kmeanspp_init",
    "linear_init",
    "plan_bits",
    "quantization_report",
    "quantize_",
    "quantized_layers",
    "share_biases_",
    "stored_as_is",
    "strip_quantization_",
]
