"""Removing dead and unused units after pruning: a structured clean-up of unstructured sparsity.

Pruning (Deep Compression section 2) zeroes single weights, and at high sparsity whole units go with
them. An output unit (a Linear row or a Conv2d filter) whose weights are all zero is *dead*: it
outputs ``act(bias)``, the same constant at every input and position, so the next layer can add that
constant times its weights into its own bias and stop reading the unit. A unit whose every reader
weight in the next layer is zero is *unused*: its own weights and bias can go. Each step can make
more units dead or unused (a row emptied here empties a column there), so both rules run to a fixed
point. The network's outputs do not change beyond float rounding, and every weight freed is one
fewer index and code in the compressed file.

The rules only hold along a chain ``producer -> ops that keep each channel's values constant and in
place -> consumer`` where the producer's output reaches nothing else, so the model is traced with
``torch.export`` (a torch.fx graph with concrete shapes, so ``if x.dim() == 2`` style code traces,
which ``torch.fx.symbolic_trace`` cannot) and any other structure (BatchNorm, residual additions,
concatenations, a layer called twice, grouped consumers, an output used twice) is left alone, with
the reason in the report. Hand-written: structured-pruning libraries such as Torch-Pruning remove
channels along a dependency graph but drop a removed unit's constant output rather than folding it
into the next layer's bias, which keeping the outputs exact needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from deepcompress.prune.apply import MASK

_aten = torch.ops.aten
#: Elementwise ops (tensor first, other arguments scalars): a channel that is constant stays constant.
_ELEMENTWISE = {
    _aten.relu.default, _aten.relu_.default, _aten.tanh.default, _aten.tanh_.default,
    _aten.sigmoid.default, _aten.sigmoid_.default, _aten.gelu.default, _aten.silu.default,
    _aten.silu_.default, _aten.leaky_relu.default, _aten.leaky_relu_.default, _aten.elu.default,
    _aten.elu_.default, _aten.hardtanh.default, _aten.hardtanh_.default, _aten.relu6.default,
    _aten.hardswish.default, _aten.hardswish_.default, _aten.hardsigmoid.default, _aten.mish.default,
    _aten.softplus.default, _aten.clone.default, _aten.contiguous.default, _aten.alias.default,
}
#: Ops that keep a constant channel constant but need no evaluation (identity on a constant).
_DROPOUT = {_aten.dropout.default, _aten.dropout_.default, _aten.feature_dropout.default}
_POOLS = {_aten.max_pool2d.default, _aten.avg_pool2d.default, _aten.adaptive_avg_pool2d.default}
_RESHAPES = {_aten.flatten.using_ints, _aten.view.default, _aten.reshape.default, _aten._unsafe_view.default}
_LAYERS = {_aten.linear.default: nn.Linear, _aten.conv2d.default: nn.Conv2d}


@dataclass
class _Link:
    """A producer whose every output unit is read only by ``consumer``, through channel-preserving ops.

    ``activations``: the chain's elementwise ops, which map a dead unit's bias to its constant. ``span``: consumer input columns per producer unit (``H*W`` when a conv output is flattened
    into a Linear, else 1). ``zero_only``: a fold is exact only for ``c == 0`` (zero padding in a
    Conv2d consumer or a padded average pool sees the border).
    """

    producer: str
    consumer: str
    activations: list[Callable[[torch.Tensor], torch.Tensor]]
    span: int
    zero_only: bool


def remove_dead_units_(
    model: nn.Module, example_input: torch.Tensor | tuple[Any, ...], min_weights: int = 0
) -> dict[str, Any]:
    """Zero dead and unused units of ``model`` in place (weights, biases and pruning masks); return a report.

    Args:
        model: any module whose forward ``torch.export`` can trace on ``example_input``.
        example_input: a tensor (or tuple of forward arguments) of the shape the model is used with.
        min_weights: also empty every producer unit with fewer than this many nonzero weights first
            (a structured pruning step: this one changes the outputs; retrain afterwards). 0: off.

    The report has ``layers`` (per layer of a chain: ``units``; ``units_empty``, its units now with
    zero weights that the next layer does not read, of which ``units_removed`` by this call
    and ``units_pruned`` by ``min_weights``; ``weights_freed``, its nonzero weights zeroed, rows
    and input columns), ``skipped`` (layer -> why it was left alone, wholly or partly),
    ``units_removed``, ``weights_freed`` (totals) and ``iterations`` (passes to the fixed point).

    In training mode a dropout in a chain scales the folded constant by its random mask; the fold
    is exact in evaluation mode and exact in expectation in training.
    """
    if isinstance(min_weights, bool) or not isinstance(min_weights, int) or min_weights < 0:
        raise ValueError(f"expected min_weights to be an int >= 0, got {min_weights!r}")
    modules = dict(model.named_modules())
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad():
            graph_module = torch.export.export(model, args)
    except Exception as err:  # noqa: BLE001 - any tracing failure means nothing can be proven
        return _report({}, {"<model>": f"torch.export could not trace the model: {type(err).__name__}: {err}"}, 0)
    links, skipped = _find_links(graph_module, modules)
    weights = {name: modules[name].weight for link in links for name in (link.producer, link.consumer)}
    nonzero_before = {name: int(torch.count_nonzero(w)) for name, w in weights.items()}
    gone_before = {link.producer: _empty_units(link, modules) for link in links}
    pruned: dict[str, int] = {}
    iterations = 0
    with torch.no_grad():
        if min_weights:
            for link in links:
                pruned[link.producer] = _prune_small_units(modules[link.producer], min_weights)
        changed = True
        while changed:
            iterations += 1
            changed = False
            for link in links:
                changed |= _clean(link, modules[link.producer], modules[link.consumer], skipped)
    layers: dict[str, dict[str, int]] = {}
    for name in weights:
        layers[name] = {"units": int(weights[name].shape[0]), "units_empty": 0, "units_removed": 0, "units_pruned": 0}
        layers[name]["weights_freed"] = nonzero_before[name] - int(torch.count_nonzero(weights[name]))
    for link in links:
        empty = _empty_units(link, modules)
        row = layers[link.producer]
        row["units_empty"] = empty
        row["units_removed"] = empty - gone_before[link.producer]
        row["units_pruned"] = pruned.get(link.producer, 0)
    return _report(layers, skipped, iterations)


def _report(layers: dict[str, dict[str, int]], skipped: dict[str, str], iterations: int) -> dict[str, Any]:
    return {
        "layers": layers,
        "skipped": skipped,
        "units_removed": sum(row["units_removed"] for row in layers.values()),
        "weights_freed": sum(row["weights_freed"] for row in layers.values()),
        "iterations": iterations,
    }


def _find_links(program: Any, modules: dict[str, nn.Module]) -> tuple[list[_Link], dict[str, str]]:
    """The producer -> consumer chains of the exported graph that the rules may act on, and why others fail."""
    params = program.graph_signature.inputs_to_parameters
    layer_nodes: dict[Any, str] = {}
    calls: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in _LAYERS:
            continue
        name = _layer_name(node, params, modules)
        if name is None:
            continue
        layer_nodes[node] = name
        calls[name] = calls.get(name, 0) + 1
    shared = {name for name, count in calls.items() if count > 1}
    for name in shared:
        skipped[name] = f"called {calls[name]} times in forward (shared layer)"
    links: list[_Link] = []
    for node, name in layer_nodes.items():
        if name in shared:
            continue
        link = _follow(node, name, layer_nodes, modules, shared, skipped)
        if link is not None:
            links.append(link)
    return links, skipped


def _layer_name(node: Any, params: dict[str, str], modules: dict[str, nn.Module]) -> str | None:
    """The module whose own weight and bias this linear/conv2d node uses, else ``None``."""
    weight = node.args[1] if len(node.args) > 1 else None
    qualified = params.get(getattr(weight, "name", ""), "")
    if not qualified.endswith(".weight") and qualified != "weight":
        return None
    name = qualified[: -len(".weight")] if qualified != "weight" else ""
    module = modules.get(name)
    if type(module) is not _LAYERS[node.target]:
        return None
    bias = node.args[2] if len(node.args) > 2 else None
    expected_bias = f"{name}.bias" if name else "bias"
    if (module.bias is None) != (bias is None):
        return None
    if bias is not None and params.get(getattr(bias, "name", "")) != expected_bias:
        return None
    return name


def _follow(
    node: Any,
    name: str,
    layer_nodes: dict[Any, str],
    modules: dict[str, nn.Module],
    shared: set[str],
    skipped: dict[str, str],
) -> _Link | None:
    """Walk from producer ``node`` through channel-preserving ops to its single consumer layer."""
    activations: list[Callable[[torch.Tensor], torch.Tensor]] = []
    zero_only = False
    producer_shape = tuple(node.meta["val"].shape)
    span = 1
    current = node
    while True:
        users = list(current.users)
        if len(users) != 1:
            skipped[name] = f"output read by {len(users)} nodes ({', '.join(str(u.target) for u in users) or 'none'})"
            return None
        user = users[0]
        if user in layer_nodes:
            break
        target = user.target
        if user.op == "output":
            skipped[name] = "its output is a model output (no next layer to fold into)"
            return None
        if user.op != "call_function" or user.args[0] is not current or any(
            isinstance(a, torch.fx.Node) for a in [*user.args[1:], *user.kwargs.values()]
        ):
            skipped[name] = f"output goes through {target}, which mixes in other tensors"
            return None
        if target in _ELEMENTWISE:
            activations.append(_bind(target, user.args[1:], user.kwargs))
        elif target in _POOLS:
            if span != 1 or len(producer_shape) != 4:
                skipped[name] = f"{target} after a reshape"
                return None
            zero_only |= target == _aten.avg_pool2d.default and _avg_pool_sees_border(user)
        elif target in _RESHAPES:
            shape_in, shape_out = tuple(current.meta["val"].shape), tuple(user.meta["val"].shape)
            if len(shape_out) != 2 or shape_out[0] != shape_in[0]:
                skipped[name] = f"{target} to shape {shape_out} is not a flatten per sample"
                return None
            span *= int(torch.Size(shape_in[2:]).numel())
        elif target not in _DROPOUT:
            skipped[name] = f"output goes through {target} (not provably channel-preserving)"
            return None
        current = user
    consumer = layer_nodes[user]
    if user.args[0] is not current:
        skipped[name] = f"output is used as a parameter of {consumer!r}"
        return None
    if consumer in shared:
        skipped[name] = f"consumer {consumer!r} is a shared layer"
        return None
    module = modules[consumer]
    units = producer_shape[1] if len(producer_shape) > 1 else 0
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or len(producer_shape) != 4 or span != 1 or module.in_channels != units:
            skipped[name] = f"consumer {consumer!r} is a grouped conv or does not read the channels one to one"
            return None
        zero_only |= any(p != 0 for p in _pairs(module.padding)) or module.padding == "same"
    elif len(user.args[0].meta["val"].shape) != 2 or module.in_features != units * span:
        skipped[name] = f"consumer {consumer!r} does not read the units as its input features"
        return None
    return _Link(name, consumer, activations, span, zero_only)


def _pairs(padding: Any) -> tuple[int, ...]:
    return (padding,) if isinstance(padding, int) else tuple(padding) if not isinstance(padding, str) else (0,)


def _avg_pool_sees_border(node: Any) -> bool:
    """Whether an ``avg_pool2d`` averages in zero padding or rescales (so a constant does not stay constant)."""
    names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    given = {**dict(zip(names, node.args)), **node.kwargs}
    padded = any(p != 0 for p in _pairs(given.get("padding", 0)))
    return (padded and bool(given.get("count_include_pad", True))) or given.get("divisor_override") is not None


def _bind(target: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(t: torch.Tensor) -> torch.Tensor:
        return target(t.clone(), *rest, **kwargs)

    return apply


def _prune_small_units(producer: nn.Module, min_weights: int) -> int:
    """Zero (and unmask) every unit of ``producer`` with 1..min_weights-1 nonzero weights; return how many."""
    rows = producer.weight.flatten(1)
    alive = torch.count_nonzero(rows, dim=1)
    small = (alive > 0) & (alive < min_weights)
    _zero_weights(producer, small, None)
    return int(small.sum())


def _clean(link: _Link, producer: nn.Module, consumer: nn.Module, skipped: dict[str, str]) -> bool:
    """One pass of both rules over ``link``; whether anything changed."""
    units = producer.weight.shape[0]
    reads = _columns(consumer.weight, units, link.span)  # (units, consumer weights per unit)
    read = reads.ne(0).any(dim=1)
    dead = producer.weight.flatten(1).eq(0).all(dim=1)
    bias = producer.bias
    changed = False
    fold = dead & read
    if fold.any():
        base = bias.detach().clone() if bias is not None else producer.weight.new_zeros(units)
        c = base.view(1, -1, *([1] * (producer.weight.dim() - 2)))
        for act in link.activations:
            c = act(c)
        c = c.reshape(units)
        exact = torch.ones_like(fold) if not link.zero_only else c.eq(0)
        ok = fold & exact if consumer.bias is not None else fold & exact & c.eq(0)
        if (fold & ~ok).any():
            skipped.setdefault(
                link.producer,
                f"{int((fold & ~ok).sum())} dead unit(s) with nonzero output not folded into {link.consumer!r} "
                "(zero padding there, or it has no bias)",
            )
        if ok.any():
            if consumer.bias is not None:
                contribution = reads[ok] * c[ok].unsqueeze(1)  # (units, out * span * kh * kw)
                per_out = contribution.view(int(ok.sum()), consumer.weight.shape[0], -1).sum(dim=(0, 2))
                consumer.bias.add_(per_out.to(consumer.bias.dtype))
            _zero_weights(consumer, ok, link.span)
            changed = True
    unused = ~_columns(consumer.weight, units, link.span).ne(0).any(dim=1)
    gone_rows = unused & ~dead
    if gone_rows.any():
        _zero_weights(producer, gone_rows, None)
        changed = True
    if bias is not None:
        clear = unused & bias.ne(0)
        if clear.any():
            bias[clear] = 0.0
            changed = True
    return changed


def _columns(weight: torch.Tensor, units: int, span: int) -> torch.Tensor:
    """The consumer's weights reading each producer unit: shape ``(units, out, span * rest)``, flattened to 2-D."""
    out = weight.shape[0]
    if weight.dim() == 2:  # Linear: columns u*span .. (u+1)*span
        return weight.view(out, units, span).permute(1, 0, 2).reshape(units, -1)
    return weight.transpose(0, 1).reshape(units, -1)  # Conv2d: input channel u


def _zero_weights(module: nn.Module, units: torch.Tensor, span: int | None) -> None:
    """Zero the producer rows (``span is None``) or the consumer input columns of ``units``, and their mask."""
    targets = [module.weight]
    mask = getattr(module, MASK, None)
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        targets.append(mask)
    for t in targets:
        fill = False if t.dtype == torch.bool else 0.0
        if span is None:
            t[units] = fill
        elif t.dim() == 2:
            t.view(t.shape[0], -1, span)[:, units] = fill
        else:
            t[:, units] = fill


def _empty_units(link: _Link, modules: dict[str, nn.Module]) -> int:
    """Units of the producer with all weights zero that the consumer does not read (their bias is moot)."""
    producer, consumer = modules[link.producer], modules[link.consumer]
    units = producer.weight.shape[0]
    gone = producer.weight.flatten(1).eq(0).all(dim=1)
    gone &= ~_columns(consumer.weight, units, link.span).ne(0).any(dim=1)
    return int(gone.sum())
