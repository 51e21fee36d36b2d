"""deepcompress: Deep Compression (Han, Mao, Dally, ICLR 2016) into real, small files.

The pipeline: ``prune_`` (section 2) -> ``quantize_`` + fine-tuning (section 3) -> ``export_compressed``
-> ``save`` (entropy coding, section 4, into one ``.dcz`` file) -> ``load`` (dense or sparse runtime).
``compress`` runs all of it from a :class:`PipelineConfig` (a TOML file via ``load_config``).
"""

import os

# torch's OpenMP threads spin while waiting by default; on a machine shared with other busy processes
# (CI runners, the 2-core boxes we benchmark on) that spinning made training and pruning 5-10x slower.
# Passive waiting costs nothing measurable when the machine is idle. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepcompress.checkpoint import load_checkpoint, save_checkpoint
from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.config import EncodeConfig, PipelineConfig, load_config
from deepcompress.data import load_split
from deepcompress.decode import load, to_dense_module
from deepcompress.errors import CheckpointError, ConfigError, DataError, DeepCompressError, FormatError
from deepcompress.format import from_bytes, inspect_file, load_compressed, save, to_bytes
from deepcompress.models import build_model
from deepcompress.pipeline import compress
from deepcompress.prune import PruneConfig, iterative_prune_, keep_pruned_zero, prune_, sensitivity_scan, sparsity_report
from deepcompress.runtime import to_sparse_module
from deepcompress.quantize import QuantizeConfig, export_compressed, quantization_report, quantize_, strip_quantization_
from deepcompress.train import TrainConfig, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CompressedLayer",
    "CompressedModel",
    "ConfigError",
    "DataError",
    "DeepCompressError",
    "EncodeConfig",
    "FormatError",
    "PipelineConfig",
    "PruneConfig",
    "QuantizeConfig",
    "TrainConfig",
    "__version__",
    "build_model",
    "compress",
    "evaluate",
    "export_compressed",
    "fit",
    "from_bytes",
    "inspect_file",
    "iterative_prune_",
    "keep_pruned_zero",
    "load",
    "load_checkpoint",
    "load_compressed",
    "load_config",
    "load_split",
    "prune_",
    "quantization_report",
    "quantize_",
    "save",
    "save_checkpoint",
    "sensitivity_scan",
    "sparsity_report",
    "strip_quantization_",
    "to_bytes",
    "to_dense_module",
    "to_sparse_module",
]
