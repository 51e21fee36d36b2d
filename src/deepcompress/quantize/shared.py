"""Weight sharing for training: a layer's weight computed from a trainable codebook (section 3).

After k-means, a layer's weight is ``codebook[code]`` at each surviving position and exactly zero at
pruned ones. :class:`SharedWeight` is a ``torch.nn.utils.parametrize`` parametrization that stores
the surviving ``positions`` and their cluster ``codes`` as fixed buffers and takes the codebook as its
only input; ``parametrize`` makes that codebook the module's ordinary ``nn.Parameter``
(``module.parametrizations.weight.original``, shape ``(k,)``), so any optimizer, CUDA and
DistributedDataParallel (which all-reduces it like any parameter) work unchanged, and the bias stays
an ordinary parameter.

Forward gathers ``codebook[codes]`` (``index_select``) and scatters it into a zero tensor; autograd's
backward of the gather adds the gradients of all weights sharing a centroid, which is exactly the
paper's Eq. 3, ``dL/dC_k = sum_{ij: I_ij = k} dL/dW_ij``. With ``grad_reduction="mean"`` that sum is
divided by the cluster size. Pruned weights are never members of a cluster and stay exactly zero
whatever the optimizer does, because they are not stored anywhere trainable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from deepcompress.errors import ConfigError
from deepcompress.prune.masks import CHUNK
from deepcompress.quantize.config import GradReduction, check_bits


def position_dtype(numel: int) -> torch.dtype:
    """int32 for flat positions into a tensor of ``numel`` elements when they fit, else int64."""
    return torch.int32 if numel <= 2**31 else torch.int64


def code_dtype(n_clusters: int) -> torch.dtype:
    """The narrowest of uint8 / int16 / int32 that holds cluster indices below ``n_clusters``."""
    if n_clusters <= 2**8:
        return torch.uint8
    return torch.int16 if n_clusters <= 2**15 else torch.int32


def _as_index(codes: torch.Tensor) -> torch.Tensor:
    """``codes`` as an index tensor (index ops take int32 or int64; uint8 would index as a mask)."""
    return codes if codes.dtype in (torch.int32, torch.int64) else codes.to(torch.int32)


def _check_integer(tensor: torch.Tensor, what: str) -> None:
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"expected integer {what}, got dtype {tensor.dtype}")


class SharedWeight(nn.Module):
    """Parametrization ``codebook (k,) -> weight (shape)`` of one weight-shared layer.

    Buffers: ``positions`` (flat row-major indices of the surviving weights, ascending; int32 where
    they fit, see :func:`position_dtype`), ``codes`` (the cluster of each position, in the narrowest
    integer type for ``n_clusters``, see :func:`code_dtype`). Narrow types keep VGG-16's 10.5M
    surviving weights at 5 bytes each instead of 16. ``bits`` (the paper's weight bits) and
    ``grad_reduction`` are plain attributes.
    """

    def __init__(
        self,
        shape: torch.Size | tuple[int, ...],
        positions: torch.Tensor,
        codes: torch.Tensor,
        n_clusters: int,
        bits: int,
        grad_reduction: GradReduction | str = GradReduction.SUM,
    ) -> None:
        super().__init__()
        self.shape = torch.Size(shape)
        self.bits = check_bits(bits)
        self.grad_reduction = GradReduction.parse(grad_reduction, "grad_reduction")
        _check_integer(positions, "positions")
        self.register_buffer("positions", positions.flatten().to(position_dtype(self.shape.numel())))
        self.set_codes_(codes, n_clusters)

    def set_codes_(self, codes: torch.Tensor, n_clusters: int) -> None:
        """Assign every position to a cluster in ``[0, n_clusters)`` (the positions stay)."""
        n_clusters = int(n_clusters)
        if n_clusters > 2**self.bits:
            raise ConfigError(f"expected at most 2**{self.bits} clusters, got {n_clusters}")
        _check_integer(codes, "codes")
        codes = codes.flatten()
        if self.positions.shape != codes.shape:
            raise ValueError(f"expected one code per position, got {codes.numel()} codes for {self.positions.numel()}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n_clusters):
            raise ValueError(f"expected codes in [0, {n_clusters}), got [{int(codes.min())}, {int(codes.max())}]")
        self.n_clusters = n_clusters
        self.register_buffer("codes", codes.to(self.positions.device, code_dtype(n_clusters)))
        counts = torch.bincount(self.codes, minlength=n_clusters).clamp_min(1)
        # Derived from `codes`, so not saved in state_dict.
        self.register_buffer("inv_counts", 1.0 / counts.to(torch.float32), persistent=False)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        """The dense weight: ``codebook[codes]`` at ``positions``, zero elsewhere."""
        if self.grad_reduction is GradReduction.MEAN:
            # Same value as `codebook` (the added term is exactly 0); gradient scaled by 1/|cluster|.
            frozen = codebook.detach()
            codebook = frozen + (codebook - frozen) * self.inv_counts.to(codebook.dtype)
        values = codebook.index_select(0, _as_index(self.codes))
        flat = codebook.new_zeros(self.shape.numel()).index_put((self.positions,), values)
        return flat.view(self.shape)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """The codebook that best reproduces ``weight`` under the fixed codes: each cluster's mean.

        Used when a weight is assigned to the module (``module.weight = w``); values at pruned
        positions are ignored.
        """
        if weight.shape != self.shape:
            raise ValueError(f"expected a weight of shape {tuple(self.shape)}, got {tuple(weight.shape)}")
        flat = weight.detach().reshape(-1)
        sums = torch.zeros(self.n_clusters, dtype=weight.dtype, device=weight.device)
        for start in range(0, self.positions.numel(), CHUNK):  # chunks: no survivor-sized copies
            positions = self.positions[start : start + CHUNK].to(weight.device)
            codes = _as_index(self.codes[start : start + CHUNK]).to(weight.device)
            sums.index_add_(0, codes, flat.index_select(0, positions))
        counts = torch.bincount(self.codes, minlength=self.n_clusters).clamp_min(1)
        return sums / counts.to(weight.device, weight.dtype)


def install_shared_weight_(module: nn.Module, shared: SharedWeight, codebook: torch.Tensor) -> nn.Module:
    """Make ``module.weight`` computed by ``shared`` from a trainable ``codebook``; returns ``module``.

    The module's weight Parameter becomes the codebook (``parametrize`` sets its storage), so the
    dense weight is freed unless the caller still holds it.
    """
    weight = module.weight
    if parametrize.is_parametrized(module, "weight"):
        raise ConfigError(
            f"{type(module).__name__}.weight is already parametrized; weight sharing needs a plain "
            "weight (call strip_quantization_ or remove the other parametrization first)"
        )
    if not isinstance(weight, nn.Parameter):
        raise ConfigError(
            f"expected {type(module).__name__}.weight to be an nn.Parameter, got {type(weight).__name__} "
            "(torch.nn.utils.prune? call torch.nn.utils.prune.remove first, deepcompress.prune keeps "
            "a plain weight)"
        )
    if weight.shape != shared.shape:
        raise ValueError(f"expected a weight of shape {tuple(shared.shape)}, got {tuple(weight.shape)}")
    shared = shared.to(weight.device)
    # unsafe=True skips parametrize's check that evaluates the new weight once: a second dense copy
    # of the layer. The forward returns the codebook's dtype, which is the weight's, in shared.shape.
    parametrize.register_parametrization(module, "weight", shared, unsafe=True)
    with torch.no_grad():
        module.parametrizations.weight.original.copy_(codebook.to(weight.device, weight.dtype))
    return module


class TiedWeight(nn.Module):
    """Parametrization of a module whose weight is tied to a weight-shared layer: the same weight from
    the same codebook Parameter. The owner's :class:`SharedWeight` is referenced, not registered, so its
    buffers are stored once."""

    def __init__(self, shared: SharedWeight) -> None:
        super().__init__()
        self.owner = [shared]

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        return self.owner[0](codebook)

    def right_inverse(self, codebook: torch.Tensor) -> torch.Tensor:
        return codebook  # the tied Parameter already is the owner's codebook


def tie_shared_weight_(module: nn.Module, shared: SharedWeight) -> nn.Module:
    """Make a module whose weight is tied to a weight-shared layer compute its weight from the same
    codebook Parameter (``install_shared_weight_`` turned the tied Parameter into that codebook)."""
    parametrize.register_parametrization(module, "weight", TiedWeight(shared), unsafe=True)
    return module


def tied_owner(module: nn.Module) -> SharedWeight | None:
    """The owner's :class:`SharedWeight` of a module tied by :func:`tie_shared_weight_`, else ``None``."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p.owner[0] for p in module.parametrizations.weight if isinstance(p, TiedWeight)), None)


def shared_weight_of(module: nn.Module) -> SharedWeight | None:
    """The module's :class:`SharedWeight` parametrization, or ``None`` if its weight is not shared."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, SharedWeight):
            return p
    return None


def codebook_of(module: nn.Module) -> nn.Parameter:
    """The trainable codebook of a weight-shared module."""
    if shared_weight_of(module) is None:
        raise ConfigError(f"{type(module).__name__} has no shared weight; run quantize_ first")
    return module.parametrizations.weight.original


def assign_clusters_(module: nn.Module, codes: torch.Tensor, codebook: torch.Tensor) -> nn.Module:
    """Give a weight-shared module new clusters in place: the cluster of every surviving position
    (``codes``) and the ``codebook`` (which may change size); returns ``module``.

    The codebook Parameter stays the same object (its data is replaced), so modules tied to it and
    optimizers created afterwards see the new values.
    """
    shared = shared_weight_of(module)
    if shared is None:
        raise ConfigError(f"{type(module).__name__} has no shared weight; run quantize_ first")
    parameter = codebook_of(module)
    shared.set_codes_(codes, codebook.numel())
    parameter.data = codebook.flatten().to(parameter.device, parameter.dtype)
    return module
