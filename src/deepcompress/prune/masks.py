"""Pruning masks as pure tensor math (Han et al. 2015, section 3; Deep Compression, section 2).

A mask is a ``bool`` tensor shaped like the weight: ``True`` keeps a weight, ``False`` prunes it.
Every function takes an optional ``previous`` mask and returns a subset of it, so a weight pruned
once is never revived. Counts are exact: ``round(s * n)`` means round half up, and ties in
magnitude are broken by position (the earlier weight, in row-major order and, across layers, in
layer order, is pruned first), so results do not depend on the sort algorithm.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch


def _scores(weight: torch.Tensor, previous: torch.Tensor | None, what: str) -> torch.Tensor:
    """Flat magnitudes to rank, with already-pruned weights at -1 so they are pruned first."""
    if not weight.is_floating_point():
        raise TypeError(f"{what}: expected a floating-point weight tensor, got dtype {weight.dtype}")
    if previous is not None and (previous.shape != weight.shape or previous.dtype != torch.bool):
        raise ValueError(
            f"{what}: expected a bool mask of shape {tuple(weight.shape)}, got {previous.dtype} {tuple(previous.shape)}"
        )
    w = weight.detach()
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{what}: weights contain NaN or inf; expected finite weights (check the training run)")
    # kthvalue does not support half precision on every device; float32 keeps every fp16/bf16 value exact.
    scores = w.abs().flatten().to(torch.float64 if w.dtype == torch.float64 else torch.float32)
    if previous is not None:
        scores = scores.masked_fill(~previous.flatten(), -1.0)
    return scores


def count_to_prune(fraction: float, n: int) -> int:
    """``round(fraction * n)``, rounding halves up (``0.25 * 10 -> 3``)."""
    return min(n, math.floor(fraction * n + 0.5))


def _keep_all_but_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Flat keep-mask pruning exactly the ``k`` smallest scores, earliest position first among ties."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return keep
    value = torch.kthvalue(scores, k).values
    below = scores < value
    tied = torch.nonzero(scores == value).flatten()
    keep[below] = False
    keep[tied[: k - int(below.sum())]] = False
    return keep


def std_mask(weight: torch.Tensor, quality: float, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Keep ``|w| >= quality * std(w)``: the paper's threshold, a quality parameter times the layer's std.

    The standard deviation is the population one (``ddof=0``) over the whole tensor, zeros of weights
    pruned earlier included.
    """
    scores = _scores(weight, previous, "std_mask")
    threshold = quality * float(weight.detach().to(scores.dtype).std(correction=0))
    keep = scores >= threshold
    return keep.view(weight.shape)


def sparsity_mask(weight: torch.Tensor, sparsity: float, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Prune exactly ``max(round(sparsity * n), already pruned)`` weights, the smallest magnitudes first."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity_mask: expected sparsity in [0, 1), got {sparsity}")
    scores = _scores(weight, previous, "sparsity_mask")
    already = 0 if previous is None else int((~previous).sum())
    k = max(count_to_prune(sparsity, scores.numel()), already)
    return _keep_all_but_smallest(scores, k).view(weight.shape)


def global_masks(
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
    previous: Mapping[str, torch.Tensor | None] | None = None,
) -> dict[str, torch.Tensor]:
    """One magnitude threshold across all ``weights``: prune ``round(sparsity * N)`` of their ``N`` together.

    Weights already pruned in ``previous`` stay pruned and count towards the target.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"global_masks: expected sparsity in [0, 1), got {sparsity}")
    if not weights:
        raise ValueError("global_masks: expected at least one weight tensor, got none")
    names: Sequence[str] = list(weights)
    prev = previous or {}
    parts = [_scores(weights[n], prev.get(n), f"global_masks[{n!r}]") for n in names]
    devices = {p.device for p in parts}
    if len(devices) > 1:
        raise ValueError(f"global_masks: expected all weights on one device, got {sorted(map(str, devices))}")
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in parts) else torch.float32
    scores = torch.cat([p.to(dtype) for p in parts])
    already = int((scores < 0).sum())
    k = max(count_to_prune(sparsity, scores.numel()), already)
    keep = _keep_all_but_smallest(scores, k)
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name in names:
        n = weights[name].numel()
        out[name] = keep[start : start + n].view(weights[name].shape).clone()  # own storage: saved as buffers
        start += n
    return out
