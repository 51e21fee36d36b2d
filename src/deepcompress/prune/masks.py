"""Pruning masks as pure tensor math (Han et al. 2015, section 3; Deep Compression, section 2).

A mask is a ``bool`` tensor shaped like the weight: ``True`` keeps a weight, ``False`` prunes it.
Every function takes an optional ``previous`` mask and returns a subset of it, so a weight pruned
once is never revived. Counts are exact: ``round(s * n)`` means round half up, and ties in
magnitude are broken by position (the earlier weight, in row-major order and, across layers, in
layer order, is pruned first), so results do not depend on the sort algorithm.

Memory: a mask is computed in chunks of the flat weight, so besides the mask itself only
chunk-sized temporaries exist. ``torch.kthvalue`` on a whole layer would copy it several times
over (VGG-16's fc6 is 411 MB of fp32: its magnitudes, then kthvalue's own copies and int64
indices), which is more than the rest of the model. The exact cut is found instead from a random
sample's quantiles, which bracket it; one chunked pass counts the magnitudes below the bracket and
gathers the few inside it, whose stable sort fixes the threshold and the tie cut; a second pass
writes the mask.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch

CHUNK = 1 << 20
"""Elements per chunk of a flat weight (4 MB of fp32 magnitudes)."""
_SAMPLE = 1 << 18
"""Most magnitudes sampled to bracket the cut; small layers sample 1/64 of theirs (at least 1024)."""
_SEED = 0


class _Part(NamedTuple):
    """A flat weight, its flat previous mask (``None``: nothing pruned yet) and its name in errors."""

    flat: torch.Tensor
    previous: torch.Tensor | None
    what: str


def _check(weight: torch.Tensor, previous: torch.Tensor | None, what: str) -> None:
    if not weight.is_floating_point():
        raise TypeError(f"{what}: expected a floating-point weight tensor, got dtype {weight.dtype}")
    if previous is not None and (previous.shape != weight.shape or previous.dtype != torch.bool):
        raise ValueError(
            f"{what}: expected a bool mask of shape {tuple(weight.shape)}, got {previous.dtype} {tuple(previous.shape)}"
        )


def _part(weight: torch.Tensor, previous: torch.Tensor | None, what: str) -> _Part:
    """Flat views of a weight and its previous mask (a copy only for a non-contiguous tensor)."""
    _check(weight, previous, what)
    return _Part(weight.detach().reshape(-1), None if previous is None else previous.reshape(-1), what)


def _score_dtype(weights: Sequence[torch.Tensor]) -> torch.dtype:
    # float32 holds every fp16/bf16 value exactly; float64 weights keep their precision.
    return torch.float64 if any(w.dtype == torch.float64 for w in weights) else torch.float32


def _chunks(part: _Part, dtype: torch.dtype) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``(start, magnitudes, previous mask)`` of each chunk; raises if a weight is NaN or infinite."""
    flat, previous, what = part
    for start in range(0, flat.numel(), CHUNK):
        magnitudes = flat[start : start + CHUNK].abs().to(dtype)
        if not bool(torch.isfinite(magnitudes.max())):  # max propagates NaN: one reduction, no bool copy
            raise ValueError(f"{what}: weights contain NaN or inf; expected finite weights (check the training run)")
        yield start, magnitudes, None if previous is None else previous[start : start + CHUNK]


def _masked(keep: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    return keep if previous is None else keep.logical_and_(previous)


def count_to_prune(fraction: float, n: int) -> int:
    """``round(fraction * n)``, rounding halves up (``0.25 * 10 -> 3``)."""
    return min(n, math.floor(fraction * n + 0.5))


def _pruned_before(parts: Sequence[_Part]) -> int:
    return sum(p.previous.numel() - int(p.previous.sum()) for p in parts if p.previous is not None)


def _bracket(parts: Sequence[_Part], r: int, survivors: int, dtype: torch.dtype) -> tuple[float, float]:
    """Magnitudes ``lo <= hi`` that very likely enclose the ``r``-th smallest surviving one, from a
    random sample of the surviving weights (a miss costs a second pass, never a wrong mask)."""
    total = sum(p.flat.numel() for p in parts)
    device = parts[0].flat.device
    generator = torch.Generator(device=device).manual_seed(_SEED)
    picks = torch.randint(total, (min(_SAMPLE, max(1024, total // 64), total),), generator=generator, device=device)
    values, offset = [], 0
    for flat, previous, _ in parts:
        local = picks[(picks >= offset) & (picks < offset + flat.numel())] - offset
        if previous is not None:
            local = local[previous[local]]
        values.append(flat[local].abs().to(dtype))
        offset += flat.numel()
    sample = torch.sort(torch.cat(values)).values
    m, q = sample.numel(), r / survivors
    if m == 0:
        return 0.0, math.inf
    eps = 6.0 * math.sqrt(q * (1.0 - q) / m) + 2.0 / m
    lo = 0.0 if q - eps <= 0 else float(sample[int((q - eps) * m)])
    hi = math.inf if q + eps >= 1 else float(sample[min(m - 1, math.ceil((q + eps) * m))])
    return lo, hi


def _gather(parts: Sequence[_Part], lo: float, hi: float, dtype: torch.dtype) -> tuple[int, torch.Tensor, torch.Tensor]:
    """How many surviving magnitudes lie below ``lo``; positions (over all parts) and magnitudes of
    those in ``[lo, hi]``, in position order."""
    device = parts[0].flat.device
    below, offset = 0, 0
    positions = [torch.zeros(0, dtype=torch.int64, device=device)]
    magnitudes = [torch.zeros(0, dtype=dtype, device=device)]
    for part in parts:
        for start, a, previous in _chunks(part, dtype):
            below += int(_masked(a < lo, previous).sum())
            local = torch.nonzero(_masked((a >= lo) & (a <= hi), previous)).flatten()
            positions.append(local + (offset + start))
            magnitudes.append(a[local])
        offset += part.flat.numel()
    return below, torch.cat(positions), torch.cat(magnitudes)


def _prune_smallest(parts: Sequence[_Part], count: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """Flat keep-masks (own storage) pruning ``max(count, already pruned)`` weights over ``parts``
    together: the previously pruned ones, then the smallest magnitudes, earliest position first."""
    device = parts[0].flat.device
    already = _pruned_before(parts)
    r = count - already  # how many survivors to prune now
    if r <= 0:
        return _write_masks(parts, dtype, torch.zeros((), dtype=dtype, device=device), -1)
    lo, hi = _bracket(parts, r, sum(p.flat.numel() for p in parts) - already, dtype)
    below, cand_pos, cand_abs = _gather(parts, lo, hi, dtype)
    if below > r:  # the sampled bracket missed (vanishingly rare): widen it
        lo = 0.0
        below, cand_pos, cand_abs = _gather(parts, lo, hi, dtype)
    if below + cand_pos.numel() < r:
        hi = math.inf
        below, cand_pos, cand_abs = _gather(parts, lo, hi, dtype)
    cut = r - below  # how many of the candidates are pruned
    if cut == 0:
        return _write_masks(parts, dtype, torch.tensor(lo, dtype=dtype, device=device), -1)
    order = torch.sort(cand_abs, stable=True).indices  # candidates are in position order
    return _write_masks(parts, dtype, cand_abs[order[cut - 1]], int(cand_pos[order[cut - 1]]))


def _write_masks(parts: Sequence[_Part], dtype: torch.dtype, threshold: torch.Tensor, last: int) -> list[torch.Tensor]:
    """Keep survivors above ``threshold``, and those equal to it at positions after ``last`` (over
    all parts; ``last = -1`` keeps every survivor equal to the threshold)."""
    masks, offset = [], 0
    for part in parts:
        out = torch.empty(part.flat.numel(), dtype=torch.bool, device=part.flat.device)
        for start, a, previous in _chunks(part, dtype):
            keep = a > threshold
            first = offset + start  # position of this chunk's first weight over all parts
            if last < first + a.numel():
                tied = a == threshold
                if last >= first:
                    tied[: last - first + 1] = False
                keep.logical_or_(tied)
            out[start : start + a.numel()] = _masked(keep, previous)
        masks.append(out)
        offset += part.flat.numel()
    return masks


def std_mask(weight: torch.Tensor, quality: float, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Keep ``|w| >= quality * std(w)``: the paper's threshold, a quality parameter times the layer's std.

    The standard deviation is the population one (``ddof=0``) over the whole tensor, zeros of weights
    pruned earlier included.
    """
    part = _part(weight, previous, "std_mask")
    dtype = _score_dtype([weight])
    threshold = quality * float(weight.detach().to(dtype).std(correction=0))
    out = torch.empty(weight.numel(), dtype=torch.bool, device=weight.device)
    for start, a, prev in _chunks(part, dtype):
        out[start : start + a.numel()] = _masked(a >= threshold, prev)
    return out.view(weight.shape)


def sparsity_mask(weight: torch.Tensor, sparsity: float, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Prune exactly ``max(round(sparsity * n), already pruned)`` weights, the smallest magnitudes first."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity_mask: expected sparsity in [0, 1), got {sparsity}")
    parts = [_part(weight, previous, "sparsity_mask")]
    (keep,) = _prune_smallest(parts, count_to_prune(sparsity, weight.numel()), _score_dtype([weight]))
    return keep.view(weight.shape)


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
    parts = [_part(weights[n], prev.get(n), f"global_masks[{n!r}]") for n in names]
    devices = {p.flat.device for p in parts}
    if len(devices) > 1:
        raise ValueError(f"global_masks: expected all weights on one device, got {sorted(map(str, devices))}")
    total = sum(p.flat.numel() for p in parts)
    keeps = _prune_smallest(parts, count_to_prune(sparsity, total), _score_dtype(list(weights.values())))
    return {name: keep.view(weights[name].shape) for name, keep in zip(names, keeps)}
