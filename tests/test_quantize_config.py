"""QuantizeConfig validation and round trip."""

from __future__ import annotations

import pytest

from deepcompress.errors import ConfigError
from deepcompress.quantize import CentroidInit, GradReduction, QuantizeConfig


def test_defaults_are_the_papers() -> None:
    cfg = QuantizeConfig()
    assert cfg.init is CentroidInit.LINEAR and cfg.grad_reduction is GradReduction.SUM


def test_round_trip_through_dict() -> None:
    cfg = QuantizeConfig(bits={"conv*": 8, "*": 5}, init="kmeans++", grad_reduction="mean", patterns=["fc*"])
    data = cfg.to_dict()
    assert data["bits"] == {"conv*": 8, "*": 5} and data["init"] == "kmeans++" and data["patterns"] == ["fc*"]
    assert QuantizeConfig.from_dict(data) == cfg


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"^quantize: unknown keys \['bitz'\]; allowed keys are \['bits', "):
        QuantizeConfig.from_dict({"bitz": 4})


@pytest.mark.parametrize("bits", [0, 17, -1, 2.5, True])
def test_bits_outside_1_to_16_are_rejected(bits: object) -> None:
    with pytest.raises(ConfigError, match=f"^quantize.bits: expected an integer in 1..16, got {bits!r}$"):
        QuantizeConfig(bits=bits)  # type: ignore[arg-type]


def test_bits_given_as_another_string_than_auto_is_rejected() -> None:
    with pytest.raises(ConfigError, match="^quantize.bits: expected an int, a pattern mapping or 'auto', got '8'$"):
        QuantizeConfig(bits="8")


def test_bits_mapping_names_the_bad_entry() -> None:
    with pytest.raises(ConfigError, match=r"^quantize.bits\['fc\*'\]: expected an integer in 1..16, got 0$"):
        QuantizeConfig(bits={"conv*": 8, "fc*": 0})


def test_unknown_init_lists_the_five() -> None:
    with pytest.raises(
        ConfigError, match=r"quantize.init: expected one of \['linear', 'density', 'random', 'kmeans\+\+', 'optimal'\], got 'forgy'"
    ):
        QuantizeConfig(init="forgy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grad_reduction": "max"}, "quantize.grad_reduction: expected one of \\['sum', 'mean'\\], got 'max'"),
        ({"max_iter": 0}, "^quantize.max_iter: expected an integer >= 1, got 0$"),
        ({"tol": float("nan")}, "^quantize.tol: expected a finite number >= 0, got nan$"),
        ({"lr": 0.0}, "^quantize.lr: expected a finite number > 0, got 0.0$"),
        ({"epochs": -1}, "^quantize.epochs: expected an integer >= 0, got -1$"),
        ({"seed": True}, "^quantize.seed: expected an integer >= 0, got True$"),
        ({"budget": -0.1}, "^quantize.budget: expected a finite number >= 0, got -0.1$"),
        ({"min_bits": 5, "max_bits": 3}, "^quantize.min_bits: expected min_bits <= max_bits, got 5 > 3$"),
        ({"bits": {1: 4}}, "^quantize.bits: expected layer-name patterns \\(str\\) as keys, got 1$"),
        ({"ignore": "fc*"}, "^quantize.ignore: expected a non-empty list of strings, got 'fc\\*'$"),
        ({"types": ["dense"]}, "quantize.types: unknown layer kinds \\['dense'\\]"),
    ],
)
def test_other_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantizeConfig(**kwargs)
