"""Whole-network batch-1 latency from the compressed form (paper section 6's "faster inference", for
whole models, convolutions included): dense, torch's sparse CSR, and ours, cold and warm.

Networks: the committed LeNet-300-100 and LeNet-5 (``experiments/results/*_mnist.dcz``, on a real
MNIST test image), VGG-16's classifier (fc6-fc8 with ReLU between them, synthetic weights at the
paper's densities, as in :mod:`.fc`), and the ResNet-18 of ``experiments/results/resnet18_fashion.dcz``
(on a real Fashion-MNIST test image, 3 channels). Each network runs three ways, interleaved in one
process after a warm-up, from the same weights:

* ``dense``: the decoded fp32 network (``to_dense_module``), torch's dense kernels;
* ``csr_torch``: every compressed layer (convolutions too) as torch sparse CSR (``backend="torch"``);
* ``ours``: ``to_sparse_module(conv_mode="sparse")`` on the backend ``auto`` picks.

Outputs are compared (``max_abs_diff``, and relative to the largest dense output) so a fast wrong network cannot pass unnoticed. Cold timings
read a buffer twice the last-level cache before every call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from deepcompress.format import load_compressed
from deepcompress.perf.fc import PAPER_LAYERS, synthetic_layer, time_calls
from deepcompress.runtime import SparseCodebookConv2d, SparseCodebookLinear, to_dense_module, to_sparse_module

NETWORKS = ("lenet300", "lenet5", "vgg16_classifier", "resnet18")
VARIANTS = ("dense", "csr_torch", "ours")


def _classifier(layers: list, sparse: str | None) -> nn.Module:
    """VGG-16's fc6-fc8 with ReLUs: dense ``nn.Linear`` (``sparse=None``) or sparse on a backend."""
    mods: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if sparse is None:
            linear = nn.Linear(layer.shape[1], layer.shape[0], bias=False)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.dense_weight()))
            mods.append(linear)
        else:
            mods.append(SparseCodebookLinear.from_compressed(layer, backend=sparse))
        if i < len(layers) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def build_network(name: str, root: Path, rng: np.random.Generator, quick: bool = False
                  ) -> tuple[dict[str, nn.Module], torch.Tensor, dict]:
    """The three variants of network ``name`` (see the module docstring), its input and a description."""
    if name == "vgg16_classifier":
        shrink = 16 if quick else 1
        layers = []
        for fc in ("vgg16_fc6", "vgg16_fc7", "vgg16_fc8"):
            out, inp, density, _ = PAPER_LAYERS[fc]
            layers.append(synthetic_layer(fc, max(out // shrink, 8), max(inp // shrink, 8), density, rng))
        x = torch.from_numpy(rng.standard_normal((1, layers[0].shape[1]), dtype=np.float32))
        models = {"dense": _classifier(layers, None), "csr_torch": _classifier(layers, "torch"),
                  "ours": _classifier(layers, "auto")}
        return models, x, {"source": "synthetic, paper densities", "nnz": sum(l.nnz for l in layers)}
    files = {"lenet300": "lenet300_mnist.dcz", "lenet5": "lenet5_mnist.dcz", "resnet18": "resnet18_fashion.dcz"}
    if name not in files:
        raise ValueError(f"expected a network from {list(NETWORKS)}, got {name!r}")
    path = root / "experiments" / "results" / files[name]
    cm = load_compressed(path)
    base = path.resolve().parent
    models = {
        "dense": to_dense_module(cm, trust_code=True, base_dir=base),
        "csr_torch": to_sparse_module(cm, conv_mode="sparse", backend="torch", trust_code=True, base_dir=base),
        "ours": to_sparse_module(cm, conv_mode="sparse", trust_code=True, base_dir=base),
    }
    return models, _input(name, root), {"source": str(path.relative_to(root)), "nnz": sum(l.nnz for l in cm.layers),
                                        "formats": _formats(models["ours"])}


def _input(name: str, root: Path) -> torch.Tensor:
    """One real test image in the network's input layout (random when the dataset is missing)."""
    from deepcompress.data import load_split

    dataset = "fashion" if name == "resnet18" else "mnist"
    try:
        image = load_split(dataset, "test").tensors(1)[0]
    except Exception:  # the dataset is not on this machine: timing does not depend on the pixels
        image = torch.rand(1, 1, 28, 28)
    image = image.reshape(1, 1, 28, 28).float()
    if name == "lenet300":
        return image.reshape(1, 784)
    return image.expand(1, 3, 28, 28).contiguous() if name == "resnet18" else image


def _formats(model: nn.Module) -> dict[str, str]:
    """Each sparse layer's batch-1 layout ("conv" layers run the packed CSR with im2col)."""
    found = {}
    for qual, module in model.named_modules():
        if isinstance(module, SparseCodebookLinear):
            found[qual] = module.format.value if module.format is not None else module.backend.value
        elif isinstance(module, SparseCodebookConv2d):
            found[qual] = "csr-conv"
    return found


def time_variants(models: dict[str, nn.Module], x: torch.Tensor, repeats: int,
                  flush: Callable[[], float] | None, rng: np.random.Generator) -> dict[str, list[float]]:
    """Interleaved timings (seconds) of each model on ``x``, in a fresh random order every repetition."""
    with torch.no_grad():
        return time_calls({name: (lambda m=model: m(x)) for name, model in models.items()}, repeats, flush, rng)


def network_latency(name: str, root: Path, repeats: int, flush: Callable[[], float], rng: np.random.Generator,
                    quick: bool = False) -> dict:
    """Cold and warm median microseconds of each variant of network ``name``, and their ratios."""
    models, x, about = build_network(name, root, rng, quick)
    with torch.no_grad():
        outputs = {k: m(x) for k, m in models.items()}
        for _ in range(3):
            for m in models.values():
                m(x)
    cold = time_variants(models, x, repeats, flush, rng)
    warm = time_variants(models, x, repeats, None, rng)

    def med(s: dict[str, list[float]]) -> dict[str, float]:
        return {k: float(np.median(v) * 1e6) for k, v in s.items()}

    cold_us, warm_us = med(cold), med(warm)
    return {
        "network": name,
        **about,
        "batch": 1,
        "cold_us": cold_us,
        "warm_us": warm_us,
        "speedup_cold": cold_us["dense"] / cold_us["ours"],
        "speedup_warm": warm_us["dense"] / warm_us["ours"],
        "csr_torch_speedup_cold": cold_us["dense"] / cold_us["csr_torch"],
        "max_abs_diff": {k: float((outputs[k] - outputs["dense"]).abs().max()) for k in ("csr_torch", "ours")},
        "max_rel_diff": {k: float((outputs[k] - outputs["dense"]).abs().max() / outputs["dense"].abs().max().clamp_min(1e-30))
                         for k in ("csr_torch", "ours")},
    }


def run_inference_benchmark(root: Path, networks: tuple[str, ...] = NETWORKS, repeats: int = 21,
                            quick: bool = False, threads: int | None = None, seed: int = 0) -> dict:
    """The Table 8 fc layers (:func:`deepcompress.perf.fc.run_fc_benchmark`) and whole-network batch-1
    latency in one process: one JSON-ready dict with the machine's description (CPU, caches, threads,
    read bandwidth). ``quick``: tiny fc layers and VGG classifier, 3 repeats (for the test suite)."""
    import os

    from deepcompress.perf.fc import run_fc_benchmark
    from deepcompress.perf.machine import CacheFlusher, last_level_cache_bytes
    from deepcompress.progress import progress

    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        from deepcompress.errors import ConfigError

        raise ConfigError(f"unknown networks {unknown}; expected names from {list(NETWORKS)}")
    fc = run_fc_benchmark(repeats=repeats, quick=quick, threads=threads or os.cpu_count() or 1, seed=seed)
    repeats = min(repeats, 3) if quick else repeats
    flusher = CacheFlusher(8 << 20 if quick else max(2 * last_level_cache_bytes(), 64 << 20))
    rng = np.random.default_rng(seed)
    rows = [network_latency(n, Path(root), repeats, flusher, rng, quick) for n in progress(networks, desc="networks")]
    return {"benchmark": "inference from the compressed form (fc layers and whole networks, batch 1 and 64)",
            "fc": fc, "networks": rows, "machine": fc["machine"], "read_bandwidth_gbs": fc["read_bandwidth_gbs"],
            "threads": fc["threads"]}
