"""Whole-model batch-1 latency and the paper's energy estimate (section 1 and Figure 11's energy model).

The paper prices one 32-bit DRAM read at 640 pJ, an SRAM read at 5 pJ and a float add at 0.9 pJ
(45 nm); its claim is that a compressed model fits on chip, so weight fetches cost SRAM rather than
DRAM energy. :func:`energy_estimate` applies those prices to the bytes each representation really
reads (fp32 dense weights vs the runtime's packed layout) and to one add per multiply-accumulate.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from deepcompress.perf.machine import last_level_cache_bytes
from deepcompress.compressed import CompressedModel
from deepcompress.errors import ConfigError
from deepcompress.models import build_model
from deepcompress.runtime import ConvMode, PackedCodebookCSR, SparseCodebookConv2d, SparseCodebookLinear, to_sparse_module
from deepcompress.runtime.dispatch import resolve

DRAM_READ_PJ = 640.0  # per 32-bit read, 45 nm (paper section 1)
SRAM_READ_PJ = 5.0
FLOAT_ADD_PJ = 0.9

# The input one inference of each registered architecture takes (batch 1).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "lenet300": (1, 784),
    "lenet5": (1, 1, 28, 28),
    "alexnet": (1, 3, 227, 227),
    "vgg16": (1, 3, 224, 224),
}


def whole_model_latency(
    cm: CompressedModel,
    dense_model: nn.Module,
    input: torch.Tensor,
    repeats: int = 101,
    warmup: int = 5,
    conv_mode: str | ConvMode = ConvMode.DENSE,
) -> dict:
    """Median (min, max) microseconds of ``dense_model(input)`` and of ``to_sparse_module(cm)(input)``.

    Both run in this process, interleaved, after ``warmup`` calls; the outputs are compared so a fast
    wrong model cannot pass unnoticed (``max_abs_diff``).
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"expected repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    sparse = to_sparse_module(cm, conv_mode=conv_mode)
    dense_model = dense_model.eval()
    models = {"dense": dense_model, "sparse": sparse}
    samples: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        outputs = {k: m(input) for k, m in models.items()}
        for _ in range(warmup):
            for m in models.values():
                m(input)
        for _ in range(repeats):
            for name, m in models.items():
                start = time.perf_counter()
                m(input)
                samples[name].append(time.perf_counter() - start)
    stats = {
        k: {"median_us": float(np.median(v) * 1e6), "min_us": float(np.min(v) * 1e6), "max_us": float(np.max(v) * 1e6)}
        for k, v in samples.items()
    }
    return {
        "model": cm.model_name,
        "conv_mode": ConvMode.parse(conv_mode, "conv_mode").value,
        "batch": int(input.shape[0]),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "backends": sorted({  # the kernels the sparse layers ran on ("simd", "numba", "torch")
            resolve(m.backend, m.packed).value
            for m in sparse.modules() if isinstance(m, (SparseCodebookLinear, SparseCodebookConv2d))
        }),
        **stats,
        "speedup": stats["dense"]["median_us"] / stats["sparse"]["median_us"],
        "max_abs_diff": float((outputs["dense"] - outputs["sparse"]).abs().max()),
    }


def _output_positions(model_name: str, names: Sequence[str], input_shape: tuple[int, ...]) -> dict[str, int]:
    """How many times each layer's weight is applied per inference (output pixels for a conv, 1 for fc),
    found by a shape-only forward pass on the meta device."""
    with torch.device("meta"):
        model = build_model(model_name)
    positions: dict[str, int] = {}
    hooks = []
    for name in names:
        module = model.get_submodule(name)

        def hook(mod: nn.Module, args: object, out: torch.Tensor, name: str = name) -> None:
            positions[name] = int(np.prod(out.shape[2:])) if out.dim() == 4 else 1

        hooks.append(module.register_forward_hook(hook))
    model(torch.empty(input_shape, device="meta"))
    for h in hooks:
        h.remove()
    return positions


def _price(nbytes: int, adds: int, on_chip_bytes: int) -> dict:
    reads = -(-nbytes // 4)
    memory = "SRAM" if nbytes <= on_chip_bytes else "DRAM"
    read_pj = reads * (SRAM_READ_PJ if memory == "SRAM" else DRAM_READ_PJ)
    add_pj = adds * FLOAT_ADD_PJ
    return {
        "bytes": nbytes,
        "reads_32bit": reads,
        "memory": memory,
        "read_pj": read_pj,
        "adds": adds,
        "add_pj": add_pj,
        "total_pj": read_pj + add_pj,
        "total_pj_if_dram": reads * DRAM_READ_PJ + add_pj,
    }


def energy_estimate(
    cm: CompressedModel, on_chip_bytes: int | None = None, input_shape: tuple[int, ...] | None = None
) -> dict:
    """Energy per batch-1 inference, dense fp32 vs the runtime's compressed layout, in picojoules.

    Weight (and bias and extras) bytes are read once per inference as 32-bit words; a representation
    of at most ``on_chip_bytes`` (default: this machine's last-level cache) is priced as SRAM reads,
    a larger one as DRAM reads. Each multiply-accumulate costs one float add (the paper gives no
    multiply figure, so multiplies are not counted); dense runs every weight, compressed only the
    nonzeros. Activation traffic is the same for both and left out.
    """
    if not isinstance(cm, CompressedModel):
        raise TypeError(f"expected a CompressedModel, got {type(cm).__name__}")
    source = "argument"
    if on_chip_bytes is None:
        on_chip_bytes, source = last_level_cache_bytes(), "this machine's last-level cache"
    shape = input_shape or INPUT_SHAPES.get(cm.model_name)
    if shape is None:
        raise ConfigError(f"no default input shape for {cm.model_name!r}; pass input_shape=(1, ...)")
    positions = _output_positions(cm.model_name, [l.name for l in cm.layers], tuple(shape))
    extras = sum(4 * int(np.asarray(t).size) for t in cm.extras.values())
    dense_bytes, sparse_bytes, dense_adds, sparse_adds = extras, extras, 0, 0
    per_layer = []
    for layer in cm.layers:
        bias = 4 * layer.bias.size if layer.bias is not None else 0
        packed = PackedCodebookCSR.from_layer(layer).nbytes + bias
        dense_bytes += 4 * layer.numel + bias
        sparse_bytes += packed
        dense_adds += layer.numel * positions[layer.name]
        sparse_adds += layer.nnz * positions[layer.name]
        per_layer.append({"layer": layer.name, "dense_bytes": 4 * layer.numel + bias, "compressed_bytes": packed,
                          "applications": positions[layer.name]})
    dense = _price(dense_bytes, dense_adds, on_chip_bytes)
    sparse = _price(sparse_bytes, sparse_adds, on_chip_bytes)
    return {
        "model": cm.model_name,
        "on_chip_bytes": on_chip_bytes,
        "on_chip_source": source,
        "pj_per": {"dram_read_32bit": DRAM_READ_PJ, "sram_read_32bit": SRAM_READ_PJ, "float_add": FLOAT_ADD_PJ},
        "dense": dense,
        "compressed": sparse,
        "energy_ratio": dense["total_pj"] / sparse["total_pj"],
        "per_layer": per_layer,
    }
