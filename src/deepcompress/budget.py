"""Spend an accuracy budget across layers: the per-layer choice behind automatic sparsity and bit widths.

Deep Compression sets each layer's pruning threshold and weight bits by hand from its sensitivity
(Han et al. 2015, section 4.1 and Fig. 6; Deep Compression, section 3 and Figs. 7-8: conv layers need
more bits than fc layers). Here the choice is automatic. Every layer offers a few options (prune 80%,
90%, ... of it; 2, 3, ... bits), each with a *saving* (weights or bits removed) and a *cost* (the
accuracy lost when that layer alone takes the option, measured without retraining). Costs of different
layers are taken as additive, a first-order assumption that holds for small drops, and the options are
chosen to save the most under a total cost: a multiple-choice knapsack, solved greedily by moving,
each step, the layer whose next option buys the most saving per unit of cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

# A cost below this counts as free: such moves are taken first, largest saving first.
_FREE = 1e-9


@dataclass(frozen=True)
class Option:
    """One choice for a layer: how much it saves and the accuracy it costs (both >= 0)."""

    saving: float
    cost: float


def monotone_costs(costs: Sequence[float]) -> list[float]:
    """Costs made non-decreasing (running maximum) and clipped at 0.

    A scan measured on a finite validation set is noisy: pruning more can score a hair better than
    pruning less. Taking the running maximum never lets an option look cheaper than a milder one.
    """
    out: list[float] = []
    worst = 0.0
    for cost in costs:
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost):
            raise ValueError(f"expected finite accuracy costs, got {cost!r}")
        worst = max(worst, float(cost))
        out.append(worst)
    return out


def greedy_allocate(options: Mapping[str, Sequence[Option]], budget: float) -> dict[str, int]:
    """For each layer, the index of its chosen option, with the summed cost at most ``budget``.

    ``options[name][0]`` must be the layer's starting point (usually saving 0, cost 0); the rest are
    ordered by increasing saving. Each step considers, for every layer, a move from its current option
    to any later one (so a flat stretch followed by a cheap big step is not missed) and takes the move
    with the highest saving per unit of added cost that still fits the budget; free moves go first.
    As in the classic knapsack heuristic, the ratio rule alone can spend the budget on cheap small
    moves that leave no room for a large one; so the greedy run is repeated starting from every
    affordable single move of one layer, and the run saving the most is returned. Returns
    ``{name: index}``.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
        raise ValueError(f"expected an accuracy budget >= 0, got {budget!r}")
    for name, layer_options in options.items():
        if not layer_options:
            raise ValueError(f"layer {name!r}: expected at least one option (its starting point), got none")
        savings = [o.saving for o in layer_options]
        if any(b < a for a, b in zip(savings, savings[1:])):
            raise ValueError(f"layer {name!r}: options must be ordered by increasing saving, got {savings}")
    start = {name: 0 for name in options}
    best = _greedy_by_rate(options, budget, start)
    for name, layer_options in options.items():
        for index in range(1, len(layer_options)):
            seeded = {**start, name: index}
            if _cost(options, seeded) > budget + _FREE:
                continue
            run = _greedy_by_rate(options, budget, seeded)
            if _saving(options, run) > _saving(options, best) + _FREE:
                best = run
    return best


def _saving(options: Mapping[str, Sequence[Option]], chosen: Mapping[str, int]) -> float:
    return sum(options[name][index].saving for name, index in chosen.items())


def _cost(options: Mapping[str, Sequence[Option]], chosen: Mapping[str, int]) -> float:
    return sum(options[name][index].cost for name, index in chosen.items())


def _greedy_by_rate(options: Mapping[str, Sequence[Option]], budget: float, start: Mapping[str, int]) -> dict[str, int]:
    """From ``start``, repeatedly take the affordable move with the best saving per unit of added cost."""
    chosen = dict(start)
    spent = _cost(options, chosen)
    while True:
        best: tuple[float, float, str, int] | None = None
        for name, layer_options in options.items():
            here = layer_options[chosen[name]]
            for index in range(chosen[name] + 1, len(layer_options)):
                there = layer_options[index]
                saving = there.saving - here.saving
                added = max(there.cost - here.cost, 0.0)
                if saving <= 0 or spent + added > budget + _FREE:
                    continue
                rate = saving / max(added, _FREE)
                key = (rate, saving, name, index)
                if best is None or key[:2] > best[:2]:
                    best = key
        if best is None:
            return chosen
        _, _, name, index = best
        spent += max(options[name][index].cost - options[name][chosen[name]].cost, 0.0)
        chosen[name] = index
