"""Pruning and weight sharing under DistributedDataParallel (``torchrun``; gloo on CPU, nccl on GPU).

Retraining after pruning (Han et al. 2015, section 3) and centroid fine-tuning (Deep Compression,
section 3.3) are ordinary training loops, so DDP parallelises them once every rank holds the same
masks, cluster indices and codebooks. Those are computed once, on rank ``src``, and broadcast:
:func:`prune_once_` and :func:`quantize_once_` do both steps; :func:`broadcast_masks_` and
:func:`broadcast_quantization_` do the broadcast alone. Without an initialised process group every
function here is the single-process operation.

Gradients of pruned weights stay zero after DDP's all-reduce: :func:`deepcompress.prune.apply.mask_gradients_`
masks each rank's gradient before it is reduced, and the sum of zeros is zero. Weight-shared layers
have no pruned entries to protect (their only parameter is the codebook).

Order of operations: DDP records a model's parameters when it is constructed, and ``quantize_``
replaces each weight parameter by a codebook parameter, so prune and quantize the plain module and
wrap it in ``DistributedDataParallel`` afterwards (unwrap with ``ddp.module``, re-wrap after
quantizing). No tensor is serialised: only fixed-size integer headers and the tensors themselves
travel, with ``torch.distributed.broadcast``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from deepcompress.errors import ConfigError
from deepcompress.selection import per_layer, select_layers, weight_layers
from deepcompress.prune.apply import adjust_dropout_, get_masks, prune_, set_masks_
from deepcompress.prune.config import PruneConfig
from deepcompress.quantize.apply import quantize_, quantized_layers
from deepcompress.quantize.config import GradReduction, QuantizeConfig
from deepcompress.quantize.shared import SharedWeight, codebook_of, install_shared_weight_

_REDUCTIONS = list(GradReduction)


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised (by ``torchrun`` + ``init_process_group``)."""
    return dist.is_available() and dist.is_initialized()


def _comm_device() -> torch.device:
    """Where broadcast tensors must live: the current CUDA device for nccl, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_src(src: int) -> None:
    world = dist.get_world_size()
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < world:
        raise ConfigError(f"expected src to be a rank in [0, {world}), got {src!r}")


def _broadcast(tensor: torch.Tensor, src: int, device: torch.device) -> torch.Tensor:
    """``tensor`` from rank ``src`` (every rank passes a tensor of the same shape and dtype)."""
    on_device = tensor.to(device)
    dist.broadcast(on_device, src)
    return on_device


def _broadcast_ints(values: list[int], src: int, device: torch.device) -> list[int]:
    return [int(v) for v in _broadcast(torch.tensor(values, dtype=torch.int64), src, device).tolist()]


def _layer_indices(model: nn.Module, names: list[str]) -> list[int]:
    """Position of each named layer among the model's weight layers (identical on every rank)."""
    order = {name: i for i, (name, _) in enumerate(weight_layers(model))}
    return [order[name] for name in names]


def broadcast_masks_(model: nn.Module, src: int = 0) -> nn.Module:
    """Give every rank rank ``src``'s pruning masks (``weight_mask`` buffers) and zero pruned weights.

    Layers that rank ``src`` has pruned get the mask on every rank, whether or not they had one;
    returns ``model``. A no-op without a process group.
    """
    if not is_distributed():
        return model
    _check_src(src)
    device = _comm_device()
    layers = weight_layers(model)
    mine = get_masks(model)
    count = _broadcast_ints([len(mine)], src, device)[0]
    indices = _broadcast_ints(_layer_indices(model, list(mine)) if dist.get_rank() == src else [0] * count, src, device)
    masks = {}
    for index in indices:
        name, module = layers[index]
        local = mine.get(name, torch.ones_like(module.weight, dtype=torch.bool))
        masks[name] = _broadcast(local.to(torch.uint8), src, device).to(torch.bool)
    set_masks_(model, masks)
    return model


def broadcast_quantization_(model: nn.Module, src: int = 0) -> nn.Module:
    """Give every rank rank ``src``'s weight sharing: positions, cluster codes, codebook and bits.

    On the other ranks each of ``src``'s weight-shared layers is (re)built from the received tensors,
    replacing any local weight sharing; returns ``model``. A no-op without a process group.
    """
    if not is_distributed():
        return model
    _check_src(src)
    device = _comm_device()
    rank = dist.get_rank()
    layers = weight_layers(model)
    shared = {name: (module, sw) for name, module, sw in quantized_layers(model)}
    count = _broadcast_ints([len(shared)], src, device)[0]
    indices = _broadcast_ints(_layer_indices(model, list(shared)) if rank == src else [0] * count, src, device)
    for index in indices:
        name, module = layers[index]
        if rank == src:
            sw = shared[name][1]
            header = [sw.positions.numel(), sw.n_clusters, sw.bits, _REDUCTIONS.index(sw.grad_reduction)]
        else:
            header = [0, 0, 0, 0]
        nnz, k, bits, reduction = _broadcast_ints(header, src, device)
        if rank == src:
            # broadcast as int64 (the receivers' buffers): the stored buffers may be narrower
            positions, codes, codebook = sw.positions.long(), sw.codes.long(), codebook_of(module).detach()
        else:
            positions = torch.empty(nnz, dtype=torch.int64)
            codes = torch.empty(nnz, dtype=torch.int64)
            codebook = torch.empty(k, dtype=torch.float32)
        positions = _broadcast(positions, src, device)
        codes = _broadcast(codes, src, device)
        codebook = _broadcast(codebook.to(torch.float32), src, device)
        if rank != src:
            if name in shared:
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            weight = module.weight
            sw = SharedWeight(weight.shape, positions.to(weight.device), codes.to(weight.device), k, bits, _REDUCTIONS[reduction])
            install_shared_weight_(module, sw, codebook.to(weight.dtype))
    return model


def prune_once_(model: nn.Module, cfg: PruneConfig, round_index: int | None = None, src: int = 0) -> nn.Module:
    """:func:`deepcompress.prune_` computed on rank ``src`` only, masks broadcast to every rank.

    The other ranks apply the same dropout adjustment (``cfg.adjust_dropout``) from the received
    masks, so every rank ends with identical masks, zeroed weights and dropout rates. Returns ``model``.
    """
    if not is_distributed():
        return prune_(model, cfg, round_index)
    _check_src(src)
    if dist.get_rank() == src:
        prune_(model, cfg, round_index)
        broadcast_masks_(model, src)
        return model
    cfg.target(round_index)  # validate round_index on every rank, as prune_ does on src
    before = {name: mask.clone() for name, mask in get_masks(model).items()}
    broadcast_masks_(model, src)
    if cfg.adjust_dropout:
        adjust_dropout_(model, before, get_masks(model))
    return model


def quantize_once_(model: nn.Module, cfg: QuantizeConfig | None = None, src: int = 0) -> nn.Module:
    """:func:`deepcompress.quantize_` (k-means per layer) on rank ``src`` only, broadcast to every rank.

    Returns ``model``; wrap it in ``DistributedDataParallel`` afterwards to fine-tune the codebooks.
    """
    cfg = cfg or QuantizeConfig()
    if not is_distributed():
        return quantize_(model, cfg)
    _check_src(src)
    if dist.get_rank() == src:
        quantize_(model, cfg)
    else:  # the same validation quantize_ does on src, so a bad config fails on every rank
        for name, _ in select_layers(model, cfg.types, cfg.patterns, cfg.ignore):
            per_layer(cfg.bits, name, "bits")
    return broadcast_quantization_(model, src)
