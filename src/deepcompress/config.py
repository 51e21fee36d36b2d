"""The whole pipeline's configuration, as read from a TOML file, mirroring the Python API.

A config file has top-level ``model`` (and ``model_args``), ``dataset``, ``checkpoint``, ``seed`` (and
optionally the model-, data- and task-source keys documented on :class:`PipelineConfig`, ``device``,
and ``train_limit`` / ``test_limit`` to use only the first images of each split, for quick runs;
``validation_images``, the training images held out for automatic choices, ``prune.method = "auto"``
and ``quantize.bits = "auto"``)
and one table per stage: ``[train]`` (the original training hyper-parameters; retraining derives from
them), ``[prune]``, ``[quantize]`` and ``[encode]``, and ``[distill]`` to retrain by knowledge distillation
from the dense reference. A stage table may be left out: without ``[prune]``
nothing is pruned, without ``[quantize]`` nothing is quantized (then the file cannot be written, since
the format stores codebooks). Unknown keys are rejected with the allowed ones listed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from deepcompress.errors import ConfigError
from deepcompress.prune import PruneConfig
from deepcompress.quantize import QuantizeConfig
from deepcompress.train import DistillConfig, TrainConfig
from deepcompress.validate import check_int, check_patterns, reject_unknown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CODERS = ("auto", "huffman", "rans", "raw")
VALUE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class EncodeConfig:
    """Stage 3 settings (paper section 4).

    ``index_bits``: width of the relative sparse index, one value, a per-layer pattern map, or
    ``"auto"`` (per layer, the width whose entropy-coded index stream is smallest). ``coder``:
    ``"huffman"`` (the paper's), ``"rans"``, ``"raw"`` (fixed width, no table), or ``"auto"`` (per
    stream, whichever gives fewer bytes). ``value_dtype``: ``"float16"`` rounds each codebook and
    bias to half precision before export (half their bytes; the accuracy reported for the file is
    measured after the rounding), ``"float32"`` keeps them exact. ``extras_dtype``: ``"float16"``
    does the same for every floating-point tensor stored as-is (BatchNorm parameters and statistics,
    layers left uncompressed; 39% of MobileNetV3-Small's file at float32); ``"float32"`` (the default)
    stores them exactly. ``bias_bits``: weight-share each compressed layer's bias into at most
    ``2**bias_bits`` float16 values, stored once with a ``bias_bits``-bit index per bias
    (:func:`deepcompress.quantize.export.share_biases_`; ``None``, the default: biases as ``value_dtype``).
    """

    index_bits: int | str | Mapping[str, int] = "auto"
    coder: str = "auto"
    value_dtype: str = "float16"
    extras_dtype: str = "float32"
    bias_bits: int | None = None

    def __post_init__(self) -> None:
        if self.bias_bits is not None:
            check_int(self.bias_bits, "encode.bias_bits", minimum=1, maximum=8, expected="an integer in 1..8 or none")
        if self.coder not in CODERS:
            raise ConfigError(f"encode.coder: expected one of {list(CODERS)}, got {self.coder!r}")
        for key in ("value_dtype", "extras_dtype"):
            if getattr(self, key) not in VALUE_DTYPES:
                raise ConfigError(f"encode.{key}: expected one of {list(VALUE_DTYPES)}, got {getattr(self, key)!r}")
        values = self.index_bits.values() if isinstance(self.index_bits, Mapping) else [self.index_bits]
        for value in values:
            if value != "auto":
                check_int(value, "encode.index_bits", minimum=1, maximum=16, expected="'auto' or an integer in 1..16")

    def to_dict(self) -> dict[str, Any]:
        index_bits = dict(self.index_bits) if isinstance(self.index_bits, Mapping) else self.index_bits
        out = {"index_bits": index_bits, "coder": self.coder, "value_dtype": self.value_dtype, "extras_dtype": self.extras_dtype}
        if self.bias_bits is not None:  # left out when unset, so configs written before it compare equal
            out["bias_bits"] = self.bias_bits
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EncodeConfig":
        reject_unknown("encode", data, [f.name for f in fields(cls)])
        return cls(**dict(data))


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``deepcompress compress`` needs: which model, which data, and each stage's settings.

    ``model`` is a reference (:func:`deepcompress.sources.parse_model_ref`): a built-in or registered
    name, ``"torchvision:resnet18"``, ``"hf:DIR"``, ``"pkg.mod:factory"`` or ``"path/file.py:factory"``,
    called with ``model_args``. ``checkpoint`` (optional: a factory or ``hf:`` directory may bring its
    own weights) is a deepcompress checkpoint, any safetensors file, or a ``.pt``/``.pth`` state dict,
    with ``strip_prefix`` / ``rename`` applied to its keys. ``dataset`` is ``mnist``, ``fashion``,
    ``imagefolder:DIR`` or ``pkg.mod:loaders`` (none: post-training compression, no retraining), read
    with ``image_size``, ``channels``, ``mean``, ``std``. ``loss``, ``metric`` and ``train_step`` are
    optional ``pkg.mod:fn`` references for tasks other than classification. ``targets`` / ``ignore``
    are layer-name patterns selecting what every stage compresses.
    """

    model: str | None = None
    checkpoint: str | None = None
    model_args: Mapping[str, Any] = field(default_factory=dict)
    strip_prefix: str | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    dataset: str | None = "mnist"
    image_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    loss: str | None = None
    metric: str | None = None
    train_step: str | None = None
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    seed: int = 0
    device: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    validation_images: int = 5000
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig | None = None
    quantize: QuantizeConfig | None = None
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    distill: DistillConfig | None = None
    """Retrain by knowledge distillation from the dense reference (``[distill]`` table; none: labels only)."""
    base_dir: str | None = field(default=None, compare=False)
    """Directory that relative file references resolve against (the config file's); not part of the config."""

    def __post_init__(self) -> None:
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"model: expected a model reference such as 'lenet5' or 'my_net.py:build', got {self.model!r}")
        if self.dataset is not None and (not isinstance(self.dataset, str) or not self.dataset):
            raise ConfigError(f"dataset: expected 'mnist', 'fashion', 'imagefolder:DIR' or 'pkg.mod:loaders', got {self.dataset!r}")
        for key in ("model_args", "rename"):
            if not isinstance(getattr(self, key), Mapping):
                raise ConfigError(f"{key}: expected a table, got {getattr(self, key)!r}")
        for key in ("checkpoint", "strip_prefix", "loss", "metric", "train_step"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
        for key in ("targets", "ignore"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, check_patterns(getattr(self, key), key))
        for key in ("mean", "std"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(float(v) for v in getattr(self, key)))
        for key in ("train_limit", "test_limit", "image_size", "channels"):
            if getattr(self, key) is not None:
                check_int(getattr(self, key), key, minimum=1, expected="a positive integer")
        check_int(self.validation_images, "validation_images", minimum=1,
                  expected="a positive integer (training images held out)")

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML/JSON data (``None`` and empty settings left out); :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {"model": self.model} if self.model is not None else {}
        for key in ("checkpoint", "model_args", "strip_prefix", "rename", "dataset", "image_size", "channels", "mean",
                    "std", "loss", "metric", "train_step", "targets", "ignore"):
            value = getattr(self, key)
            if value is not None and value != () and value != {}:
                out[key] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, Mapping) else value
        out["seed"] = self.seed
        if self.device:
            out["device"] = self.device
        for key in ("train_limit", "test_limit"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["validation_images"] = self.validation_images
        out["train"] = self.train.to_dict()
        if self.prune is not None:
            out["prune"] = self.prune.to_dict()
        if self.quantize is not None:
            out["quantize"] = self.quantize.to_dict()
        out["encode"] = self.encode.to_dict()
        if self.distill is not None:
            out["distill"] = self.distill.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> "PipelineConfig":
        """Build from a parsed TOML mapping. Relative paths stay as written and resolve against
        ``base_dir`` (the config file's directory) where they are used, so a config works from any
        working directory and ``to_dict`` gives back what the file said."""
        reject_unknown("config", data, [f.name for f in fields(cls) if f.name != "base_dir"])
        if "model" not in data:
            raise ConfigError("config: missing required key 'model'")
        values = {k: v for k, v in data.items() if k not in ("train", "prune", "quantize", "encode", "distill")}
        return cls(
            **values,
            train=TrainConfig.from_dict(data.get("train", {})),
            prune=PruneConfig.from_dict(data["prune"]) if "prune" in data else None,
            quantize=QuantizeConfig.from_dict(data["quantize"]) if "quantize" in data else None,
            encode=EncodeConfig.from_dict(data.get("encode", {})),
            distill=DistillConfig.from_dict(data["distill"]) if "distill" in data else None,
            base_dir=str(base_dir) if base_dir is not None else None,
        )


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a TOML pipeline config; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return PipelineConfig.from_dict(data, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


__all__ = ["EncodeConfig", "PipelineConfig", "load_config"]
