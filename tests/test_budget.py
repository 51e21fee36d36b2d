"""The greedy budget allocation behind automatic sparsity and bit widths."""

from __future__ import annotations

import itertools
import random

import pytest

from deepcompress.budget import Option, greedy_allocate, monotone_costs


def total(options: dict[str, list[Option]], chosen: dict[str, int], what: str) -> float:
    return sum(getattr(options[name][index], what) for name, index in chosen.items())


def test_budget_goes_where_it_saves_the_most_per_unit_of_cost() -> None:
    options = {
        "big": [Option(0, 0), Option(100, 0.01), Option(200, 0.05)],
        "small": [Option(0, 0), Option(10, 0.01), Option(20, 0.02)],
    }
    assert greedy_allocate(options, 0.0) == {"big": 0, "small": 0}
    assert greedy_allocate(options, 0.01) == {"big": 1, "small": 0}
    assert greedy_allocate(options, 0.03) == {"big": 1, "small": 2}
    assert greedy_allocate(options, 1.0) == {"big": 2, "small": 2}


def test_free_moves_are_taken_even_with_no_budget_and_flat_stretches_are_jumped() -> None:
    options = {"a": [Option(0, 0), Option(5, 0.0), Option(6, 0.02), Option(50, 0.021)]}
    assert greedy_allocate(options, 0.0) == {"a": 1}
    # from option 1, moving to 2 buys 1 per 0.02, moving straight to 3 buys 45 per 0.021
    assert greedy_allocate(options, 0.021) == {"a": 3}


def test_random_instances_stay_within_budget_and_no_single_move_still_fits() -> None:
    rng = random.Random(0)
    for _ in range(200):
        options = {}
        for name in "abc":
            savings = sorted(rng.uniform(0, 100) for _ in range(rng.randint(1, 5)))
            costs = monotone_costs([rng.uniform(0, 0.05) for _ in savings])
            options[name] = [Option(0, 0)] + [Option(s, c) for s, c in zip(savings, costs)]
        budget = rng.uniform(0, 0.08)
        chosen = greedy_allocate(options, budget)
        spent = total(options, chosen, "cost")
        assert spent <= budget + 1e-9
        for name, index in chosen.items():  # maximal: every further move would overspend or save nothing
            for later in range(index + 1, len(options[name])):
                move = options[name][later]
                gain = move.saving - options[name][index].saving
                assert gain <= 0 or spent + move.cost - options[name][index].cost > budget + 1e-9
        # and never worse than the best single layer's affordable option alone
        best_single = max(o.saving for opts in options.values() for o in opts if o.cost <= budget)
        assert total(options, chosen, "saving") >= best_single - 1e-9


def test_greedy_is_optimal_on_concave_curves() -> None:
    """With diminishing returns (savings concave in cost) the greedy choice is the exact optimum."""
    options = {
        name: [Option(sum(gains[:i]), 0.01 * i) for i in range(len(gains) + 1)]
        for name, gains in {"a": [50, 30, 10], "b": [40, 35, 5], "c": [20, 1]}.items()
    }
    for steps in range(0, 9):
        budget = 0.01 * steps
        chosen = greedy_allocate(options, budget)
        best = max(
            sum(options[n][i].saving for n, i in zip(options, combo))
            for combo in itertools.product(*(range(len(o)) for o in options.values()))
            if sum(options[n][i].cost for n, i in zip(options, combo)) <= budget + 1e-9
        )
        assert total(options, chosen, "saving") == pytest.approx(best)


def test_monotone_costs_take_the_running_maximum() -> None:
    assert monotone_costs([0.01, -0.002, 0.005, 0.03, 0.02]) == [0.01, 0.01, 0.01, 0.03, 0.03]
    assert monotone_costs([-0.01, 0.0]) == [0.0, 0.0]


@pytest.mark.parametrize(
    "options, budget, message",
    [
        ({"a": [Option(0, 0)]}, -0.1, "budget >= 0"),
        ({"a": [Option(0, 0)]}, float("nan"), "budget >= 0"),
        ({"a": []}, 0.1, "layer 'a': expected at least one option"),
        ({"a": [Option(5, 0), Option(1, 0.1)]}, 0.1, "layer 'a': options must be ordered by increasing saving"),
    ],
)
def test_bad_input_is_rejected_with_what_was_expected(options: dict, budget: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        greedy_allocate(options, budget)
    with pytest.raises(ValueError, match="finite accuracy costs"):
        monotone_costs([0.1, float("inf")])
