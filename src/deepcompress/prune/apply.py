"""Pruning an ``nn.Module`` in place and keeping pruned weights at zero while it retrains.

Han et al. 2015, section 3 (Deep Compression, section 2): prune small weights, then retrain the
survivors with the pruned connections held at zero. Each pruned layer carries its mask as a ``bool``
buffer ``weight_mask`` (``True`` = kept), so masks travel in ``state_dict()`` and checkpoints.
Biases are never pruned (``BiasPolicy.KEEP``, as in the paper).

A pruned weight must stay exactly 0.0 through retraining: :func:`keep_pruned_zero` re-zeroes it after
every optimizer step and clears its optimizer state (momentum, Adam moments), so neither weight
decay nor momentum nor Adam can revive it; :func:`mask_gradients_` additionally zeroes its gradient.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any, Iterator, Mapping

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from deepcompress.errors import ConfigError
from deepcompress.selection import FilterFn, layer_kind, per_layer, select_layers
from deepcompress.prune.config import PruneConfig, PruneMethod
from deepcompress.prune.masks import CHUNK, global_masks, sparsity_mask, std_mask

MASK = "weight_mask"
"""Name of the ``bool`` buffer (``True`` = kept) a pruned layer carries; quantization and export read it too."""
_GRAD_HOOK = "_deepcompress_grad_hook"


def _masked_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Layers carrying a deepcompress mask (a ``bool`` buffer; torch.nn.utils.prune's float masks are not)."""
    for name, module in model.named_modules():
        mask = getattr(module, MASK, None)
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            yield name, module


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``weight_mask`` buffer of every pruned layer, by module name (the live buffers, not copies)."""
    return {name: getattr(module, MASK) for name, module in _masked_modules(model)}


def _store_mask(module: nn.Module, mask: torch.Tensor, owned: bool = False) -> None:
    """Register or update ``module.weight_mask`` and zero the pruned weights (as +0.0).

    ``owned``: ``mask`` is a fresh tensor nobody else holds, so it becomes the buffer itself instead
    of a copy (a layer's mask is a byte per weight: 103 MB for VGG-16's fc6).
    """
    weight = module.weight
    mask = mask.to(device=weight.device, dtype=torch.bool)
    current = getattr(module, MASK, None)
    if isinstance(current, torch.Tensor) and current.dtype == torch.bool and current.shape == mask.shape:
        current.copy_(mask)
    else:
        module.register_buffer(MASK, mask if owned else mask.clone())
    _zero_pruned_weights(weight, mask)


@torch.no_grad()
def _zero_pruned_weights(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """``weight[~mask] = +0.0`` chunk by chunk, so no weight-sized inverted mask is made."""
    if not weight.is_contiguous() or not mask.is_contiguous():
        weight.masked_fill_(~mask, 0.0)
        return
    flat, keep = weight.view(-1), mask.view(-1)
    for start in range(0, flat.numel(), CHUNK):
        flat[start : start + CHUNK].masked_fill_(~keep[start : start + CHUNK], 0.0)


def _check_module(name: str, module: nn.Module) -> None:
    if hasattr(module, "weight_orig"):
        raise ConfigError(
            f"layer {name!r} is pruned with torch.nn.utils.prune (it has 'weight_orig'); "
            "call torch.nn.utils.prune.remove(module, 'weight') before using deepcompress pruning"
        )


def set_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Attach ``masks`` (module name -> bool mask, as from :func:`get_masks`) and zero pruned weights.

    Use it to restore a pruned model, e.g. before loading a checkpoint whose state dict has
    ``<layer>.weight_mask`` entries. Unlike :func:`prune_` it sets the masks as given.
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules.get(name)
        if module is None or layer_kind(module) is None:
            layers = [n for n, m in modules.items() if layer_kind(m) is not None]
            raise ConfigError(f"mask for {name!r}: expected the name of a weight layer, one of {layers}")
        _check_module(name, module)
        if tuple(mask.shape) != tuple(module.weight.shape) or mask.dtype != torch.bool:
            raise ConfigError(
                f"mask for {name!r}: expected a bool tensor of shape {tuple(module.weight.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        _store_mask(module, mask)
    return model


def _check_target_patterns(target: Any, names: list[str], what: str) -> None:
    """Every pattern of a per-layer mapping must match a selected layer (a typo would be silently ignored)."""
    if not isinstance(target, Mapping):
        return
    for pattern in target:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"{what} pattern {pattern!r} matches no selected layer; selected layers are {names}")


def _new_masks(layers: list[tuple[str, nn.Module]], cfg: PruneConfig, target: Any) -> dict[str, torch.Tensor]:
    previous = {n: getattr(m, MASK, None) for n, m in layers}
    if cfg.method is PruneMethod.GLOBAL:
        return global_masks({n: m.weight for n, m in layers}, float(target), previous)
    masks: dict[str, torch.Tensor] = {}
    for name, module in layers:
        if cfg.method is PruneMethod.STD:
            masks[name] = std_mask(module.weight, per_layer(target, name, "prune.quality"), previous[name])
        else:
            masks[name] = sparsity_mask(module.weight, per_layer(target, name, "prune.sparsity"), previous[name])
    return masks


def prune_(
    model: nn.Module, cfg: PruneConfig, round_index: int | None = None, *, filter_fn: FilterFn | None = None
) -> nn.Module:
    """Prune ``model``'s selected layers in place and return it.

    The layers are those :func:`~deepcompress.selection.select_layers` picks from ``cfg.types``,
    ``cfg.patterns``, ``cfg.ignore`` and, from Python, ``filter_fn(module, name) -> bool``.

    ``round_index`` (0-based) selects the ramped target of that round of ``cfg.rounds`` (see
    :class:`PruneConfig`); ``None`` applies the final target at once (one-shot pruning). Masks only
    shrink: a weight pruned before stays pruned. With ``cfg.adjust_dropout`` the dropout after each
    pruned Linear is scaled (:func:`adjust_dropout_`).
    """
    if not isinstance(cfg, PruneConfig):
        raise TypeError(f"prune_: expected a PruneConfig, got {type(cfg).__name__}")
    layers = select_layers(model, cfg.types, cfg.patterns, cfg.ignore, filter_fn)
    for name, module in layers:
        _check_module(name, module)
    target = cfg.target(round_index)
    what = "prune.quality" if cfg.method is PruneMethod.STD else "prune.sparsity"
    _check_target_patterns(target, [n for n, _ in layers], what)
    before = {name: mask.clone() for name, mask in get_masks(model).items()}
    masks = _new_masks(layers, cfg, target)
    for name, module in layers:
        _store_mask(module, masks[name], owned=True)
    if cfg.adjust_dropout:
        adjust_dropout_(model, before, get_masks(model))
    return model


def mask_gradients_(model: nn.Module) -> nn.Module:
    """Zero the gradient of every pruned weight during backward (a hook per masked layer); returns ``model``.

    The hook reads the layer's current mask at each backward, so later pruning rounds are honoured.
    Calling it again replaces the hooks instead of stacking them.
    """
    for _, module in _masked_modules(model):
        old = getattr(module, _GRAD_HOOK, None)
        if old is not None:
            old.remove()

        def hook(grad: torch.Tensor, module: nn.Module = module) -> torch.Tensor:
            return grad.masked_fill(~getattr(module, MASK), 0.0)

        setattr(module, _GRAD_HOOK, module.weight.register_hook(hook))
    return model


@torch.no_grad()
def _zero_pruned(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for _, module in _masked_modules(model):
        weight = module.weight
        if id(weight) not in in_optimizer:
            continue
        pruned = ~getattr(module, MASK)
        weight.masked_fill_(pruned, 0.0)
        for value in optimizer.state.get(weight, {}).values():
            # Per-weight state (SGD momentum_buffer, Adam exp_avg / exp_avg_sq / max_exp_avg_sq) has the
            # weight's shape; scalars such as Adam's step count do not and are left alone.
            if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                value.masked_fill_(pruned, 0.0)


def keep_pruned_zero(optimizer: torch.optim.Optimizer, model: nn.Module) -> RemovableHandle:
    """After every ``optimizer.step()``, re-zero pruned weights of ``model`` and clear their optimizer state.

    Returns the hook handle (``.remove()`` detaches it). Works for any optimizer whose per-parameter
    state tensors are shaped like the parameter (SGD with momentum, Adam, AdamW, RMSprop, ...).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"keep_pruned_zero: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        _zero_pruned(opt, model)

    return optimizer.register_step_post_hook(hook)


def sparsity_report(model: nn.Module) -> list[dict[str, Any]]:
    """Per compressible layer: ``layer``, ``numel``, ``kept``, ``kept_pct``; the last row is ``"total"``.

    ``kept_pct`` is the paper's "Weights%" column (Tables 2-5): surviving weights as a percentage of the
    layer's weights (biases excluded). Layers without a mask count as dense.
    """
    rows: list[dict[str, Any]] = []
    for name, module in select_layers(model):
        numel = module.weight.numel()
        mask = getattr(module, MASK, None)
        kept = int(mask.sum()) if isinstance(mask, torch.Tensor) else numel
        rows.append({"layer": name, "numel": numel, "kept": kept, "kept_pct": 100.0 * kept / numel})
    numel = sum(r["numel"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    rows.append({"layer": "total", "numel": numel, "kept": kept, "kept_pct": 100.0 * kept / numel})
    return rows


def _dropouts_after_linears(model: nn.Module) -> list[tuple[str, nn.Dropout]]:
    """``(linear name, dropout)`` for each ``nn.Dropout`` whose nearest preceding weighted layer, in
    registration order (the forward order of an ``nn.Sequential``), is an ``nn.Linear``."""
    pairs: list[tuple[str, nn.Dropout]] = []
    source: str | None = None
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is not None:
            source = name if kind == "linear" else None
        elif isinstance(module, nn.Dropout) and source is not None:
            pairs.append((source, module))
            source = None
    return pairs


def adjust_dropout_(
    model: nn.Module,
    masks_before: Mapping[str, torch.Tensor],
    masks_after: Mapping[str, torch.Tensor],
) -> nn.Module:
    """Scale dropout after pruning (Han 2015, section 3.1, eq. 2): ``D_r = D_o * sqrt(C_ir / C_io)``.

    Dropout acts on neurons, so the dropout that follows a Linear layer (in registration order, with
    only weightless modules such as ReLU in between) drops that layer's output neurons; ``C`` is that
    Linear's number of connections, surviving before (``C_io``) and after (``C_ir``) pruning: the
    mask's kept count, or all weights for a layer absent from ``masks_before``. Applying this after
    each round compounds to ``D_o * sqrt(C_final / C_dense)``. Returns ``model``.
    """
    modules = dict(model.named_modules())
    for linear, dropout in _dropouts_after_linears(model):
        if linear not in masks_after:
            continue
        before = masks_before.get(linear)
        kept_before = int(before.sum()) if before is not None else modules[linear].weight.numel()
        kept_after = int(masks_after[linear].sum())
        if kept_after > kept_before:
            raise ValueError(
                f"adjust_dropout_: layer {linear!r} has {kept_after} weights after pruning but {kept_before} before; "
                "expected masks_before and masks_after in that order"
            )
        if kept_before > 0:
            dropout.p = dropout.p * math.sqrt(kept_after / kept_before)
    return model
