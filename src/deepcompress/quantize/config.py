"""Configuration of trained quantization / weight sharing (Deep Compression, section 3).

``bits`` is the paper's "weight bits": a layer shares at most ``2**bits`` distinct values, found by
1-D k-means on its surviving weights (no sharing across layers). The paper uses 8 bits for conv and
5 bits for fc layers (AlexNet, VGG-16) and shows that linear initialisation of the centroids works
best (Fig. 4-5): both are expressible here, e.g. ``bits={"conv*": 8, "*": 5}``.

``bits = "auto"`` chooses each layer's width from ``min_bits..max_bits`` by a scan of the layers
quantized one at a time on a validation set, spending at most ``budget`` of summed accuracy drop
(before fine-tuning) where the most bits are saved (see :mod:`deepcompress.quantize.auto`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from deepcompress.choices import Choice
from deepcompress.errors import ConfigError
from deepcompress.selection import check_types
from deepcompress.validate import check_int, check_number, reject_unknown

MAX_BITS = 16
AUTO = "auto"


class CentroidInit(Choice):
    """How the k-means centroids are initialised (paper section 3.1, Fig. 4)."""

    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"
    KMEANS_PP = "kmeans++"
    OPTIMAL = "optimal"
    """Globally optimal 1-D k-means by dynamic programming on a 65,536-bin histogram, then Lloyd
    (:mod:`deepcompress.quantize.optimal`); exact when a layer has at most that many distinct values
    (up to 9 bits; wider codebooks use fewer bins to bound the DP's memory, and beyond 10 bits the
    linear start)."""


class BitsPlan(Choice):
    """How ``bits = "auto"`` chooses the widths (see :mod:`deepcompress.quantize.auto`)."""

    INDEPENDENT = "independent"
    """Each layer scanned alone at every width, drops summed (one scan, assumes they add up)."""
    JOINT = "joint"
    """Narrow one layer by one bit at a time with every layer quantized, re-measured after each step."""


class GradReduction(Choice):
    """How the gradients of a centroid's member weights are combined (paper Eq. 3 is ``sum``)."""

    SUM = "sum"
    MEAN = "mean"



def check_bits(value: object, where: str = "bits") -> int:
    """Return ``value`` if it is an int in 1..16, else raise ``ConfigError`` naming ``where``."""
    return check_int(value, where, minimum=1, maximum=MAX_BITS)


@dataclass(frozen=True)
class QuantizeConfig:
    """Weight-sharing settings, validated on construction.

    Attributes:
        bits: weight bits per layer (1..16): one int, a mapping from layer-name patterns to ints
            (first match wins, see :func:`deepcompress.selection.per_layer`), or ``"auto"``.
        budget, min_bits, max_bits: with ``bits="auto"``, the accuracy drop the choice may spend and
            the widths it may choose from.
        bits_plan: with ``bits="auto"``, ``independent`` (one scan of each layer alone) or ``joint``
            (one bit at a time, measured with every layer quantized; see :class:`BitsPlan`).
        init: centroid initialisation; ``linear`` (the paper's best) by default.
        max_iter: most Lloyd iterations per layer (>= 1).
        tol: stop early when the squared centroid shift summed over clusters is at most
            ``tol * var(weights)`` (the scikit-learn convention); 0 runs to exact convergence.
        grad_reduction: ``sum`` (Eq. 3) or ``mean`` (the sum divided by the cluster size).
        types: layer kinds to quantize (``"linear"``, ``"conv2d"``, ...; ``None``: every kind a
            handler takes, see :mod:`deepcompress.handlers`).
        patterns: optional layer-name patterns narrowing the selection.
        ignore: layer-name patterns left out of the selection.
        seed: seed of the ``random`` and ``kmeans++`` initialisations.
        epochs: fine-tuning epochs of the shared centroids (0 skips fine-tuning).
        lr: fine-tuning learning rate.
    """

    bits: int | Mapping[str, int] | str = 5
    init: CentroidInit = CentroidInit.LINEAR
    max_iter: int = 300
    tol: float = 0.0
    grad_reduction: GradReduction = GradReduction.SUM
    types: tuple[str, ...] | None = None
    patterns: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    seed: int = 0
    epochs: int = 1
    lr: float = 1e-3
    budget: float = 0.005
    min_bits: int = 2
    max_bits: int = 8
    bits_plan: BitsPlan = BitsPlan.INDEPENDENT

    def __post_init__(self) -> None:
        check_bits(self.min_bits, "quantize.min_bits")
        check_bits(self.max_bits, "quantize.max_bits")
        if self.min_bits > self.max_bits:
            raise ConfigError(f"quantize.min_bits: expected min_bits <= max_bits, got {self.min_bits} > {self.max_bits}")
        check_number(self.budget, "quantize.budget", minimum=0)
        if isinstance(self.bits, str):
            if self.bits != AUTO:
                raise ConfigError(f"quantize.bits: expected an int, a pattern mapping or 'auto', got {self.bits!r}")
        elif isinstance(self.bits, Mapping):
            if not self.bits:
                raise ConfigError("quantize.bits: expected an int or a non-empty pattern mapping, got {}")
            for pattern, b in self.bits.items():
                if not isinstance(pattern, str):
                    raise ConfigError(f"quantize.bits: expected layer-name patterns (str) as keys, got {pattern!r}")
                check_bits(b, f"quantize.bits[{pattern!r}]")
            object.__setattr__(self, "bits", MappingProxyType(dict(self.bits)))
        else:
            check_bits(self.bits, "quantize.bits")
        object.__setattr__(self, "init", CentroidInit.parse(self.init, "quantize.init"))
        object.__setattr__(self, "grad_reduction", GradReduction.parse(self.grad_reduction, "quantize.grad_reduction"))
        object.__setattr__(self, "bits_plan", BitsPlan.parse(self.bits_plan, "quantize.bits_plan"))
        check_int(self.max_iter, "quantize.max_iter", minimum=1)
        check_number(self.tol, "quantize.tol", minimum=0)
        check_int(self.seed, "quantize.seed", minimum=0)
        check_int(self.epochs, "quantize.epochs", minimum=0)
        check_number(self.lr, "quantize.lr", minimum=0, open_min=True)
        object.__setattr__(self, "types", check_types(self.types, "quantize.types"))
        object.__setattr__(self, "ignore", _str_tuple(self.ignore, "ignore") if self.ignore else ())
        if self.patterns is not None:
            object.__setattr__(self, "patterns", _str_tuple(self.patterns, "patterns"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready dict (enums as their names, tuples as lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["bits"] = dict(self.bits) if isinstance(self.bits, Mapping) else self.bits
        out["init"] = self.init.value
        out["grad_reduction"] = self.grad_reduction.value
        out["bits_plan"] = self.bits_plan.value
        out["types"] = None if self.types is None else list(self.types)
        out["patterns"] = None if self.patterns is None else list(self.patterns)
        out["ignore"] = list(self.ignore)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizeConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ConfigError`` naming them."""
        reject_unknown("quantize", data, [f.name for f in fields(cls)])
        return cls(**dict(data))


def _str_tuple(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"quantize.{name}: expected a non-empty list of strings, got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"quantize.{name}: expected a list of strings, got {value!r}")
    return tuple(value)
