"""deepcompress: Deep Compression (Han, Mao, Dally, ICLR 2016) into real, small files."""

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import CheckpointError, ConfigError, DataError, DeepCompressError, FormatError

__version__ = "0.1.0"

__all__ = [
    "CompressedLayer",
    "CompressedModel",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeepCompressError",
    "FormatError",
    "__version__",
]
