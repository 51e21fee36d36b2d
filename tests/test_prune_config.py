"""PruneConfig: validation with exact messages, the per-round ramp, dict round trip."""

from __future__ import annotations

import pytest

from deepcompress.errors import ConfigError
from deepcompress.prune import BiasPolicy, PruneConfig, PruneMethod


def test_defaults_follow_the_paper() -> None:
    cfg = PruneConfig()
    assert cfg.method is PruneMethod.STD
    assert cfg.bias is BiasPolicy.KEEP
    assert cfg.lr_factor == 0.1
    assert cfg.adjust_dropout is True


def test_dict_round_trip_with_per_layer_mapping() -> None:
    cfg = PruneConfig(method="sparsity", sparsity={"conv*": 0.5, "*": 0.9}, patterns=["fc*", "conv*"], rounds=3)
    data = cfg.to_dict()
    assert data["method"] == "sparsity"
    assert data["sparsity"] == {"conv*": 0.5, "*": 0.9}
    assert data["patterns"] == ["fc*", "conv*"]
    assert PruneConfig.from_dict(data) == cfg


def test_sparsity_ramp_removes_the_same_fraction_of_survivors_each_round() -> None:
    cfg = PruneConfig(method="sparsity", sparsity=0.875, rounds=3)  # keep 1/8 at the end
    assert [cfg.target(r) for r in range(3)] == pytest.approx([0.5, 0.75, 0.875])
    assert cfg.target() == 0.875
    assert PruneConfig(method="global", sparsity=0.99, rounds=2).target(0) == pytest.approx(0.9)
    assert PruneConfig(method="sparsity", sparsity=0.3, rounds=1).target(0) == pytest.approx(0.3)


def test_quality_ramps_linearly() -> None:
    cfg = PruneConfig(quality={"fc1": 2.0, "*": 1.0}, rounds=4)
    assert dict(cfg.target(1)) == {"fc1": 1.0, "*": 0.5}
    assert dict(cfg.target(3)) == {"fc1": 2.0, "*": 1.0}
    with pytest.raises(ConfigError) as info:
        cfg.target(4)
    assert str(info.value) == "round_index: expected an integer in [0, 4), got 4"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, "prune.sparsity: expected a number in [0, 1), got 1.0"),
        ({"sparsity": -0.1}, "prune.sparsity: expected a number in [0, 1), got -0.1"),
        ({"sparsity": float("nan")}, "prune.sparsity: expected a number in [0, 1), got nan"),
        ({"sparsity": {"fc*": 1.2}}, "prune.sparsity['fc*']: expected a number in [0, 1), got 1.2"),
        ({"sparsity": "0.5"}, "prune.sparsity: expected a number in [0, 1), got '0.5'"),
        ({"quality": -0.5}, "prune.quality: expected a finite number >= 0, got -0.5"),
        ({"quality": float("inf")}, "prune.quality: expected a finite number >= 0, got inf"),
        ({"quality": True}, "prune.quality: expected a finite number >= 0, got True"),
        ({"quality": {}}, "prune.quality: expected a number or a non-empty mapping of layer patterns, got {}"),
        ({"method": "l1"}, "prune.method: expected one of ['std', 'sparsity', 'global', 'auto'], got 'l1'"),
        ({"bias": "prune"}, "prune.bias: expected one of ['keep'], got 'prune'"),
        ({"types": ("linear", "lstm")}, "prune.types: unknown layer kinds ['lstm']; expected a subset of ['linear', 'conv1d', 'conv2d', 'conv3d', 'embedding', 'embedding_bag', 'hf_conv1d']"),
        ({"patterns": "fc*"}, "prune.patterns: expected a non-empty sequence of layer-name patterns or None (all layers), got 'fc*'"),
        ({"rounds": 0}, "prune.rounds: expected an integer >= 1, got 0"),
        ({"epochs_per_round": -1}, "prune.epochs_per_round: expected an integer >= 0, got -1"),
        ({"lr_factor": 0.0}, "prune.lr_factor: expected a number in (0, 1], got 0.0"),
        ({"weight_decay": -1e-4}, "prune.weight_decay: expected a finite number >= 0, got -0.0001"),
        ({"adjust_dropout": "yes"}, "prune.adjust_dropout: expected true or false, got 'yes'"),
        (
            {"method": "global", "sparsity": {"*": 0.5}},
            "prune.sparsity: method 'global' prunes to one overall target, expected a number, got a mapping "
            "{'*': 0.5}; use method 'sparsity' for per-layer targets",
        ),
    ],
)
def test_bad_values_are_rejected_with_the_value_and_what_is_allowed(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PruneConfig(**kwargs)
    assert str(info.value) == message


def test_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ConfigError) as info:
        PruneConfig.from_dict({"sparsity": 0.5, "bogus": 1, "alpha": 2})
    assert str(info.value) == (
        "prune: unknown keys ['alpha', 'bogus']; allowed keys are ['method', 'quality', 'sparsity', 'types', "
        "'patterns', 'ignore', 'bias', 'rounds', 'epochs_per_round', 'lr_factor', 'weight_decay', 'adjust_dropout', "
        "'ramp', 'budget', 'tolerance', 'max_sparsity', 'recovery', 'scan_fractions', 'remove_dead', 'min_unit_weights']"
    )


def test_scan_fractions_are_a_sorted_grid_of_fractions() -> None:
    assert PruneConfig(method="auto", scan_fractions=[0.9, 0.5, 0.9]).scan_fractions == (0.5, 0.9)
    assert PruneConfig.from_dict(PruneConfig(scan_fractions=(0.5,)).to_dict()).scan_fractions == (0.5,)
    with pytest.raises(ConfigError, match=r"prune.scan_fractions: expected a number in \[0, 1\), got 1.0"):
        PruneConfig(scan_fractions=[0.5, 1.0])
    with pytest.raises(ConfigError, match=r"prune.scan_fractions: expected a non-empty list of fractions in \[0, 1\), got \[\]"):
        PruneConfig(scan_fractions=[])
