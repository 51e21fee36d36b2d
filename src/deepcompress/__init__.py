"""deepcompress: Deep Compression (Han, Mao, Dally, ICLR 2016) into real, small files.

The pipeline on any ``nn.Module``: ``prune_`` (section 2) -> ``quantize_`` + fine-tuning (section 3)
-> ``export_compressed`` -> ``save`` (entropy coding, section 4, into one ``.dcz`` file) ->
``load(path, model=...)`` (dense or sparse runtime) or ``load_state_dict(path)``. ``compress`` runs
all of it on a module and data a user has, from a :class:`PipelineConfig` (a TOML file via
``load_config``; ``compress_config`` also resolves the model and data the file names).

Only the core is here. The MNIST tooling stays in its modules: the dataset loaders
(``deepcompress.data.load_split``), the paper's built-in networks (``deepcompress.models.build_model``)
and deepcompress's own training checkpoints (``deepcompress.checkpoint``).
"""

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.config import EncodeConfig, PipelineConfig, load_config
from deepcompress.loading import load, load_state_dict
from deepcompress.runtime.dense import to_dense_module
from deepcompress.handlers import LayerHandler, register_handler
from deepcompress.errors import CheckpointError, ConfigError, DataError, DeepCompressError, FormatError
from deepcompress.format import from_bytes, inspect_file, load_compressed, save, to_bytes
from deepcompress.models import register_model
from deepcompress.pipeline import compress, compress_config
from deepcompress.prune import PruneConfig, iterative_prune_, keep_pruned_zero, prune_, sensitivity_scan, sparsity_report
from deepcompress.runtime import to_sparse_module
from deepcompress.quantize import QuantizeConfig, export_compressed, quantization_report, quantize_, strip_quantization_
from deepcompress.train import TrainConfig, evaluate, fit
from deepcompress import distill, sentences  # sentence models: distillation objective, embeddings from a file

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CompressedLayer",
    "CompressedModel",
    "ConfigError",
    "DataError",
    "DeepCompressError",
    "EncodeConfig",
    "LayerHandler",
    "FormatError",
    "PipelineConfig",
    "PruneConfig",
    "QuantizeConfig",
    "TrainConfig",
    "__version__",
    "compress",
    "compress_config",
    "distill",
    "evaluate",
    "export_compressed",
    "fit",
    "from_bytes",
    "inspect_file",
    "iterative_prune_",
    "keep_pruned_zero",
    "load",
    "load_compressed",
    "load_config",
    "load_state_dict",
    "prune_",
    "quantization_report",
    "quantize_",
    "register_handler",
    "register_model",
    "save",
    "sentences",
    "sensitivity_scan",
    "sparsity_report",
    "strip_quantization_",
    "to_bytes",
    "to_dense_module",
    "to_sparse_module",
]
