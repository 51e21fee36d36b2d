"""The checks every configuration shares: exact error texts, bools refused, values returned."""

from __future__ import annotations

import pytest

from deepcompress.errors import ConfigError
from deepcompress.validate import check_int, check_number, reject_unknown


def test_reject_unknown_lists_the_allowed_keys_in_the_order_given() -> None:
    reject_unknown("prune", {"rounds": 2}, ["rounds", "budget"])
    with pytest.raises(ConfigError) as info:
        reject_unknown("prune", {"zeta": 1, "alpha": 2, "rounds": 3}, ["rounds", "budget"])
    assert str(info.value) == "prune: unknown keys ['alpha', 'zeta']; allowed keys are ['rounds', 'budget']"


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (0, {"minimum": 1}, "k: expected an integer >= 1, got 0"),
        (17, {"minimum": 1, "maximum": 16}, "k: expected an integer in 1..16, got 17"),
        (9, {"maximum": 8}, "k: expected an integer <= 8, got 9"),
        (True, {}, "k: expected an integer, got True"),
        (2.0, {"minimum": 1}, "k: expected an integer >= 1, got 2.0"),
        ("3", {"minimum": 1, "expected": "a positive integer"}, "k: expected a positive integer, got '3'"),
    ],
)
def test_check_int_says_what_was_expected(value: object, bounds: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_int(value, "k", **bounds)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (1.0, {"minimum": 0, "maximum": 1, "open_max": True}, "x: expected a number in [0, 1), got 1.0"),
        (0, {"minimum": 0, "maximum": 1, "open_min": True}, "x: expected a number in (0, 1], got 0"),
        (-0.5, {"minimum": 0}, "x: expected a finite number >= 0, got -0.5"),
        (0.0, {"minimum": 0, "open_min": True}, "x: expected a finite number > 0, got 0.0"),
        (2, {"maximum": 1.5}, "x: expected a finite number <= 1.5, got 2"),
        (float("inf"), {}, "x: expected a finite number, got inf"),
        (float("nan"), {"minimum": 0}, "x: expected a finite number >= 0, got nan"),
        (False, {"minimum": 0}, "x: expected a finite number >= 0, got False"),
        ("0.5", {"minimum": 0, "maximum": 1, "open_max": True}, "x: expected a number in [0, 1), got '0.5'"),
    ],
)
def test_check_number_says_what_was_expected(value: object, bounds: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_number(value, "x", **bounds)
    assert str(info.value) == message


def test_valid_values_come_back() -> None:
    assert check_int(16, "k", minimum=1, maximum=16) == 16
    assert check_number(1, "x", minimum=0, maximum=1) == 1.0 and isinstance(check_number(1, "x"), float)
    assert check_number(0, "x", minimum=0, maximum=1, open_max=True) == 0.0


def test_check_patterns_takes_a_list_of_strings_and_names_the_setting() -> None:
    from deepcompress.validate import check_patterns

    assert check_patterns(["fc*", "conv1"], "ignore") == ("fc*", "conv1") and check_patterns([], "ignore") == ()
    for bad in ("fc*", 3, ["fc", 1]):
        with pytest.raises(ConfigError, match=r"^prune.ignore: expected a list of layer-name patterns, got "):
            check_patterns(bad, "prune.ignore")
