"""Configuration of the pruning stage (Han et al. 2015; Deep Compression, section 2).

``PruneConfig`` is a frozen, validated dataclass. Its choices:

* ``method`` -- how the pruned set is chosen per round:

  - ``"std"`` (default, the paper's rule): a layer's weights with ``|w| < quality * std(w)`` are
    pruned, ``std`` being the population standard deviation of the layer's whole weight tensor as
    it stands when pruning (weights pruned in earlier rounds count as zeros; in a zero-centred layer
    this lowers the std, so re-applying a quality to unchanged weights prunes nothing more);
  - ``"sparsity"``: exactly ``round(sparsity * n)`` weights of each layer are pruned, the smallest
    magnitudes first;
  - ``"global"``: one magnitude threshold across all selected layers, pruning exactly
    ``round(sparsity * N)`` of their ``N`` weights together;
  - ``"auto"``: no per-layer numbers; at the start of every round each layer's sparsity is chosen
    from a sensitivity scan of the current model on a validation set, spending at most ``budget``
    (the summed accuracy drop of the layers pruned one at a time, before retraining) where it removes
    the most weights, up to ``max_sparsity``, and pruning stops once the retrained model's validation
    accuracy is ``tolerance`` below the reference's (see :mod:`deepcompress.prune.auto`). A round may
    spend at most ``recovery`` times what is left of the tolerance: 1 (the default) assumes retraining
    wins nothing back; retraining usually recovers most of a one-shot drop, so a larger value lets a
    tight tolerance on held-out images still prune far. A scan costs
    one validation pass per layer and fraction: ``scan_fractions`` replaces the default grid
    (``AUTO_FRACTIONS``, 17 fractions) by a coarser one for networks with many layers. It needs the
    validation accuracy, so it runs through :func:`iterative_prune_` with a ``plan`` (the pipeline
    builds one).

* ``remove_dead`` -- after every round's pruning and once more after the last retraining, units
  (neurons, filters) that pruning emptied are removed exactly (their constant output folded into
  the next layer's bias, see :func:`deepcompress.prune.dead.remove_dead_units_`) and units no
  weight reads are emptied; ``min_unit_weights`` N > 0 first empties units with fewer than N
  surviving weights (before retraining, which recovers it).

* ``bias`` -- ``"keep"``: biases are never pruned, as in the paper (its tables count weights only).
  This is the only policy; it is explicit so that configs say so.

Iterative pruning (Han 2015, section 3.3) runs ``rounds`` prune/retrain rounds; the target reaches
its final value at the last round. In round ``r`` (0-based) of ``R``:

* a sparsity target ``s`` keeps ``(1 - s) ** ((r + 1) / R)`` of the weights, so every round removes
  the same fraction of the weights still alive (a linear ramp would leave most of the pruning, and
  of the accuracy loss, to the last round: 90% -> 30/60/90% prunes 57% of the survivors at the end);
* a quality ``q`` is used as ``q * (r + 1) / R``: for bell-shaped weights the kept fraction then
  falls by a roughly constant factor per round as well.

That is ``ramp = "geometric"``. ``ramp = "cubic"`` is the gradual schedule of Zhu & Gupta (2017, "To
prune, or not to prune"): the target is ``final * (1 - (1 - (r + 1) / R) ** 3)``, pruning much in the
first rounds, while the network is most redundant, and little in the last ones, which then act as
fine-tuning at nearly the final sparsity. It pays with many short rounds (e.g. 12 rounds of 2 epochs).

Masks only ever shrink across rounds.

``lr_factor``, ``epochs_per_round``, ``weight_decay`` and ``adjust_dropout`` describe retraining:
the retraining learning rate is the original one times ``lr_factor`` (0.1 for LeNet in the paper,
0.01 for AlexNet), with L2 regularisation (the paper's best choice with retraining), and dropout
rates are scaled after pruning (Han 2015, section 3.1, see :func:`adjust_dropout_`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from types import MappingProxyType
from typing import Any, Mapping, Union

from deepcompress.choices import Choice
from deepcompress.errors import ConfigError
from deepcompress.selection import check_types
from deepcompress.validate import check_int, check_number, check_patterns, reject_unknown

Target = Union[float, Mapping[str, float]]


class PruneMethod(Choice):
    """How the pruned weights are chosen (see the module docstring)."""

    STD = "std"
    SPARSITY = "sparsity"
    GLOBAL = "global"
    AUTO = "auto"


class PruneRamp(Choice):
    """How a round's target approaches the final one (see the module docstring)."""

    GEOMETRIC = "geometric"
    CUBIC = "cubic"


class BiasPolicy(Choice):
    """What happens to biases: ``"keep"``, they are never pruned (the paper's choice)."""

    KEEP = "keep"


def _check_target(value: object, what: str, *, upper: float | None) -> Target:
    """A number in ``[0, upper)`` (``[0, inf)`` when ``upper`` is None), or a non-empty mapping from
    layer-name patterns to such numbers (first match wins)."""
    if isinstance(value, Mapping):
        if not value:
            raise ConfigError(f"{what}: expected a number or a non-empty mapping of layer patterns, got {{}}")
        checked: dict[str, float] = {}
        for pattern, number in value.items():
            if not isinstance(pattern, str):
                raise ConfigError(f"{what}: expected layer-name patterns (str) as keys, got {pattern!r}")
            checked[pattern] = check_number(number, f"{what}[{pattern!r}]", minimum=0, maximum=upper, open_max=True)
        return MappingProxyType(checked)
    return check_number(value, what, minimum=0, maximum=upper, open_max=True)


def _ramp_one(final: float, progress: float, is_sparsity: bool, kind: PruneRamp) -> float:
    if kind is PruneRamp.CUBIC:
        return final * (1.0 - (1.0 - progress) ** 3)
    if is_sparsity:
        return 1.0 - (1.0 - final) ** progress
    return final * progress


def ramp(
    target: Target, round_index: int, rounds: int, *, is_sparsity: bool, kind: PruneRamp = PruneRamp.GEOMETRIC
) -> Target:
    """The target of round ``round_index`` (0-based) of ``rounds`` (rules in the module docstring)."""
    progress = (round_index + 1) / rounds
    if isinstance(target, Mapping):
        return MappingProxyType({p: _ramp_one(v, progress, is_sparsity, kind) for p, v in target.items()})
    return _ramp_one(target, progress, is_sparsity, kind)


@dataclass(frozen=True)
class PruneConfig:
    """Settings of the pruning stage; validated on construction (see the module docstring)."""

    method: PruneMethod = PruneMethod.STD
    quality: Target = 1.0
    sparsity: Target = 0.9
    types: tuple[str, ...] | None = None
    patterns: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    bias: BiasPolicy = BiasPolicy.KEEP
    rounds: int = 1
    epochs_per_round: int = 10
    lr_factor: float = 0.1
    weight_decay: float = 5e-4
    adjust_dropout: bool = True
    ramp: PruneRamp = PruneRamp.GEOMETRIC
    budget: float = 0.01
    tolerance: float = 0.005
    max_sparsity: float = 0.99
    recovery: float = 1.0
    scan_fractions: tuple[float, ...] | None = None
    remove_dead: bool = False
    min_unit_weights: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "method", PruneMethod.parse(self.method, "prune.method"))
        set_(self, "ramp", PruneRamp.parse(self.ramp, "prune.ramp"))
        for name in ("budget", "tolerance", "max_sparsity"):
            set_(self, name, check_number(getattr(self, name), f"prune.{name}", minimum=0, maximum=1, open_max=True))
        set_(self, "bias", BiasPolicy.parse(self.bias, "prune.bias"))
        set_(self, "quality", _check_target(self.quality, "prune.quality", upper=None))
        set_(self, "sparsity", _check_target(self.sparsity, "prune.sparsity", upper=1.0))
        if self.method is PruneMethod.GLOBAL and isinstance(self.sparsity, Mapping):
            raise ConfigError(
                "prune.sparsity: method 'global' prunes to one overall target, expected a number, "
                f"got a mapping {dict(self.sparsity)}; use method 'sparsity' for per-layer targets"
            )
        set_(self, "types", check_types(self.types, "prune.types"))
        set_(self, "ignore", check_patterns(self.ignore, "prune.ignore"))
        if self.patterns is not None:
            if isinstance(self.patterns, str) or not all(isinstance(p, str) for p in self.patterns) or not self.patterns:
                raise ConfigError(
                    f"prune.patterns: expected a non-empty sequence of layer-name patterns or None (all layers), "
                    f"got {self.patterns!r}"
                )
            set_(self, "patterns", tuple(self.patterns))
        if self.scan_fractions is not None:
            fractions = self.scan_fractions
            if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (list, tuple)) or not fractions:
                raise ConfigError(f"prune.scan_fractions: expected a non-empty list of fractions in [0, 1), got {fractions!r}")
            checked = tuple(check_number(f, "prune.scan_fractions", minimum=0, maximum=1, open_max=True) for f in fractions)
            set_(self, "scan_fractions", tuple(sorted(set(checked))))
        set_(self, "recovery", check_number(self.recovery, "prune.recovery", minimum=1))
        check_int(self.rounds, "prune.rounds", minimum=1)
        check_int(self.epochs_per_round, "prune.epochs_per_round", minimum=0)
        check_number(self.lr_factor, "prune.lr_factor", minimum=0, maximum=1, open_min=True)
        set_(self, "weight_decay", check_number(self.weight_decay, "prune.weight_decay", minimum=0))
        if not isinstance(self.remove_dead, bool):
            raise ConfigError(f"prune.remove_dead: expected true or false, got {self.remove_dead!r}")
        check_int(self.min_unit_weights, "prune.min_unit_weights", minimum=0)
        if self.min_unit_weights and not self.remove_dead:
            raise ConfigError("prune.min_unit_weights: expected remove_dead = true with it (it empties units for that clean-up)")
        if not isinstance(self.adjust_dropout, bool):
            raise ConfigError(f"prune.adjust_dropout: expected true or false, got {self.adjust_dropout!r}")

    def target(self, round_index: int | None = None) -> Target:
        """The quality (method ``"std"``) or sparsity of round ``round_index``; ``None``: the final one."""
        if self.method is PruneMethod.AUTO:
            raise ConfigError(
                "prune.method 'auto' has no fixed target: each round's is planned from a sensitivity scan; "
                "run it through deepcompress.prune.iterative_prune_(..., "
                "plan=SensitivityPlanner(cfg, evaluate, reference_accuracy)) or the pipeline"
            )
        final = self.quality if self.method is PruneMethod.STD else self.sparsity
        if round_index is None:
            return final
        if isinstance(round_index, bool) or not isinstance(round_index, int) or not 0 <= round_index < self.rounds:
            raise ConfigError(f"round_index: expected an integer in [0, {self.rounds}), got {round_index!r}")
        return ramp(final, round_index, self.rounds, is_sparsity=self.method is not PruneMethod.STD, kind=self.ramp)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready data; :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        for name in ("remove_dead", "min_unit_weights"):  # left out when off, so configs written before them compare equal
            if not out[name]:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PruneConfig":
        """Build from :meth:`to_dict` output (or a TOML table); unknown keys are rejected by name."""
        reject_unknown("prune", data, [f.name for f in fields(cls)])
        return cls(**dict(data))
