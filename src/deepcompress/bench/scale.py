"""Compressing a full-size network without retraining: time and memory of every stage (paper Tables 4-5).

``run_scale_benchmark("vgg16")`` takes VGG-16 (138M weights, 553 MB fp32) through the whole file
pipeline -- prune each layer to the paper's density, share weights with 1-D k-means (conv 8 bits, fc
5 bits), encode and write the ``.dcz`` file, read it back and decode it into a dense module -- and
reports wall time per stage, peak resident memory and the per-layer table of the written file.

No ImageNet training happens here, so the weights are *trained-like* stand-ins: torch's default
initialisation is uniform, whereas trained conv/fc weights are peaked at zero with heavy tails, so
every weight is drawn from a Laplace distribution with He scale (std ``sqrt(2 / fan_in)``), every bias
from a normal with std 0.01. Sizes of the entropy-coded streams depend on that choice; the stage
times and memory do not, to first order.

Memory is kept low by working layer by layer on the dense model: a layer's surviving weights are
selected exactly but in chunks (:func:`prune_survivors`), after which its dense tensor is freed, and
decoding writes straight into an uninitialised module (:func:`deepcompress.decode.to_dense_module`)
instead of building a default-initialised one and copying state dicts into it.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deepcompress.allocator import pin_mmap_threshold
from deepcompress.bench.machine import machine_info
from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.decode import empty_model, to_dense_module
from deepcompress.errors import ConfigError
from deepcompress.format import inspect_file, load_compressed, save
from deepcompress.selection import layer_kind, select_layers
from deepcompress.prune.masks import count_to_prune
from deepcompress.quantize import KMeans1D

# Per model: the paper's layer names, kept fraction per layer (Tables 2-5), weight bits of conv and fc
# layers and the relative-index width (section 2 and the tables' captions).
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "vgg16": {
        "names": [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
        + ["fc6", "fc7", "fc8"],
        "kept": [0.58, 0.22, 0.34, 0.36, 0.53, 0.24, 0.42, 0.32, 0.27, 0.34, 0.35, 0.29, 0.36, 0.04, 0.04, 0.23],
        "bits": {"conv2d": 8, "linear": 5},
        "index_bits": 5,
    },
    "alexnet": {
        "names": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"],
        "kept": [0.84, 0.38, 0.35, 0.37, 0.37, 0.09, 0.09, 0.25],
        "bits": {"conv2d": 8, "linear": 5},
        "index_bits": 4,
    },
    "lenet5": {
        "names": ["conv1", "conv2", "ip1", "ip2"],
        "kept": [0.66, 0.12, 0.08, 0.19],
        "bits": {"conv2d": 8, "linear": 5},
        "index_bits": 5,
    },
}
QUICK_STAND_IN = "lenet5"
"""The network ``quick=True`` compresses instead (same code path, thousandths of the work)."""

_CHUNK = 1 << 20
_SAMPLE = 1 << 16


def _chunks(flat: torch.Tensor, size: int) -> list[tuple[int, torch.Tensor]]:
    return [(start, flat[start : start + size]) for start in range(0, flat.numel(), size)]


def prune_survivors(
    weight: torch.Tensor, sparsity: float, chunk: int = _CHUNK, sample: int = _SAMPLE, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions (int64, ascending) and values of the weights that survive magnitude pruning.

    Exactly the weights ``deepcompress.prune.masks.sparsity_mask(weight, sparsity)`` keeps (the
    ``round(sparsity * n)`` smallest magnitudes pruned, earlier positions first among ties), found in
    ``O(chunk)`` extra memory instead of the full-size copies ``torch.kthvalue`` makes (for VGG-16's
    fc6, 411 MB of scores plus 822 MB of int64 indices). Hand-written for that reason: a random
    sample's quantiles bracket the threshold, one chunked pass counts the magnitudes below the bracket
    and gathers those inside it, an exact stable sort of that small set fixes the threshold and the
    tie cut, and a second chunked pass collects the survivors. Works on any device.
    """
    if not weight.is_floating_point():
        raise TypeError(f"prune_survivors: expected a floating-point weight, got dtype {weight.dtype}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"prune_survivors: expected sparsity in [0, 1), got {sparsity}")
    flat = weight.detach().reshape(-1)
    n = flat.numel()
    k = count_to_prune(sparsity, n)
    lo, hi = _bracket(flat, k, sample, seed)
    below, cand_pos, cand_abs = _gather(flat, lo, hi, chunk)
    if below > k:  # the sampled bracket missed (vanishingly rare): widen it to the whole range
        lo = 0.0
        below, cand_pos, cand_abs = _gather(flat, lo, hi, chunk)
    if below + cand_pos.numel() < k:
        hi = math.inf
        below, cand_pos, cand_abs = _gather(flat, lo, hi, chunk)
    r = k - below  # how many of the candidates are pruned
    if r == 0:
        keep: Callable[[torch.Tensor, int], torch.Tensor] = lambda a, start: a >= lo
    else:
        order = torch.sort(cand_abs, stable=True).indices  # candidates are in position order
        threshold = cand_abs[order[r - 1]]
        last_pruned = int(cand_pos[order[r - 1]])

        def keep(a: torch.Tensor, start: int) -> torch.Tensor:
            tied = a == threshold
            if start <= last_pruned < start + a.numel():
                tied[: last_pruned - start + 1] = False
            elif start <= last_pruned:
                tied.zero_()
            return (a > threshold) | tied

    positions, values = [], []
    for start, part in _chunks(flat, chunk):
        local = torch.nonzero(keep(part.abs(), start)).flatten()
        positions.append(local + start)
        values.append(part[local])
    return torch.cat(positions), torch.cat(values)


def _bracket(flat: torch.Tensor, k: int, sample: int, seed: int) -> tuple[float, float]:
    """Magnitudes ``lo <= hi`` that very likely enclose the ``k``-th smallest, from a random sample."""
    n = flat.numel()
    if k == 0:
        return 0.0, 0.0  # nothing pruned: every weight is ">= lo" and none is a candidate
    generator = torch.Generator(device=flat.device).manual_seed(seed)
    idx = torch.randint(n, (min(sample, n),), generator=generator, device=flat.device)
    s = torch.sort(flat[idx].abs().float()).values
    m, q = s.numel(), k / n
    eps = 6.0 * math.sqrt(q * (1.0 - q) / m) + 2.0 / m
    lo = 0.0 if q - eps <= 0 else float(s[int((q - eps) * m)])
    hi = math.inf if q + eps >= 1 else float(s[min(m - 1, math.ceil((q + eps) * m))])
    return lo, hi


def _gather(flat: torch.Tensor, lo: float, hi: float, chunk: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Count of magnitudes below ``lo``, and positions and magnitudes of those in ``[lo, hi]``."""
    below = 0
    positions, magnitudes = [], []
    for start, part in _chunks(flat, chunk):
        a = part.abs()
        if not math.isfinite(float(a.max())):  # max propagates NaN: one reduction, no bool copy
            raise ValueError("prune_survivors: weights contain NaN or inf; expected finite weights")
        below += int((a < lo).sum())
        local = torch.nonzero((a >= lo) & (a <= hi)).flatten()
        positions.append(local + start)
        magnitudes.append(a[local])
    return below, torch.cat(positions), torch.cat(magnitudes)


def _conv_attrs(module: nn.Conv2d) -> dict[str, Any]:
    """What the decoder and runtime need to rebuild a convolution (as ``quantize.export_compressed``)."""
    return {
        "stride": list(module.stride),
        "padding": module.padding if isinstance(module.padding, str) else list(module.padding),
        "dilation": list(module.dilation),
        "groups": int(module.groups),
    }


def trained_like_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every Linear/Conv2d weight with Laplace(He scale) and bias with N(0, 0.01^2), in place.

    Generated in chunks so no temporary as large as a layer is made (VGG-16's fc6 is 411 MB).
    """
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for _, module in select_layers(model):
            fan_in = module.weight[0].numel()
            b = math.sqrt(1.0 / fan_in)  # Laplace scale b: std = sqrt(2) * b = sqrt(2 / fan_in)
            for _, part in _chunks(module.weight.view(-1), _CHUNK):
                part.uniform_(-1.0, 1.0, generator=generator)
                sign = torch.sign(part)
                # |u| ~ U[0, 1) -> -b log(1 - |u|) ~ Exp(1/b): with the sign, a Laplace law (inverse CDF)
                part.abs_().clamp_(max=1.0 - 2.0**-24).neg_().log1p_().mul_(-b).mul_(sign)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.01, generator=generator)
    return model


class _Peak:
    """Peak resident memory per stage: Linux's VmHWM, reset through ``/proc/self/clear_refs``.

    ``available`` is False where the kernel does not allow the reset; stage peaks are then ``None``
    and only ``ru_maxrss`` (the process's lifetime peak) is reported.
    """

    def __init__(self) -> None:
        self.available = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        if self.available:
            self._reset()

    def read(self) -> int | None:
        if not self.available:
            return None
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None


def _rss_now() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _compress_layer(
    name: str, module: nn.Module, index: int, settings: dict[str, Any], seed: int, times: dict[str, float]
) -> CompressedLayer:
    """Prune, weight-share and package one layer; its dense weight is freed before k-means."""
    kind = layer_kind(module)
    assert kind is not None
    start = time.perf_counter()
    positions, values = prune_survivors(module.weight, 1.0 - settings["kept"][index], seed=seed + index)
    bias = module.bias.detach().cpu().numpy().copy() if module.bias is not None else None
    shape, attrs = tuple(module.weight.shape), _conv_attrs(module) if kind == "conv2d" else {}
    module.weight = None  # free the dense tensor now: only the survivors are needed from here on
    times["prune_s"] += time.perf_counter() - start
    start = time.perf_counter()
    bits = settings["bits"][kind]
    km = KMeans1D(2**bits, init="linear", seed=[seed, index]).fit(values.cpu().numpy())
    layer = CompressedLayer(
        name=name, kind=kind, shape=shape, codebook=km.centroids_, positions=positions.cpu().numpy(),
        codes=km.labels_, bias=bias, weight_bits=bits, index_bits=settings["index_bits"], attrs=attrs,
    )
    times["quantize_s"] += time.perf_counter() - start
    return layer


def _fingerprint(cm: CompressedModel) -> list[tuple[str, int]]:
    """CRC-32 of every layer's arrays: checks the round trip without keeping two copies alive."""
    out = []
    for layer in cm.layers:
        crc = 0
        for array in (layer.codebook, layer.positions, layer.codes, layer.bias):
            crc = zlib.crc32(np.ascontiguousarray(array) if array is not None else b"-", crc)
        out.append((layer.name, crc))
    return out


def _check_decoded(model: nn.Module, cm: CompressedModel) -> None:
    """Every decoded weight equals ``codebook[codes]`` at its position and zero elsewhere (no dense copy)."""
    state = model.state_dict()
    for layer in cm.layers:
        flat = state[f"{layer.name}.weight"].view(-1).cpu()
        expected = torch.from_numpy(layer.codebook[layer.codes])
        nonzero = int(np.count_nonzero(layer.codebook[layer.codes]))
        if not torch.equal(flat[torch.from_numpy(layer.positions)], expected) or int(flat.count_nonzero()) != nonzero:
            raise AssertionError(f"decoded layer {layer.name!r} differs from the compressed model")


def run_scale_benchmark(
    model: str = "vgg16",
    quick: bool = False,
    seed: int = 0,
    device: str = "cpu",
    out_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Compress ``model`` (``"vgg16"`` or ``"alexnet"``) without retraining; time and measure each stage.

    ``quick=True`` runs the same pipeline on LeNet-5 (with its Table 3 densities) as a smoke test.
    The ``.dcz`` file goes to ``out_path`` if given, else to a temporary directory that is removed.
    Returns a JSON-ready dict: ``compress_s`` (prune + quantize + encode and write), ``decode_s`` (read
    and decode into a dense module), ``stages_s``, ``peak_rss_bytes`` and per-stage peaks,
    ``file_bytes``, ``dense_bytes``, ``ratio``, ``layers`` (the paper's table columns from the file)
    and ``machine``.
    """
    if model not in ("vgg16", "alexnet"):
        raise ConfigError(f"run_scale_benchmark: expected model 'vgg16' or 'alexnet', got {model!r}")
    name = QUICK_STAND_IN if quick else model
    settings = PAPER_SETTINGS[name]
    if out_path is None:
        with tempfile.TemporaryDirectory(prefix="dc-scale-") as tmp:
            return run_scale_benchmark(model, quick, seed, device, Path(tmp) / f"{name}.dcz")
    pin_mmap_threshold()  # freed per-layer chunks go back to the OS (see deepcompress.allocator)
    peak = _Peak()
    baseline_rss = _rss_now()
    stages: dict[str, float] = {"prune_s": 0.0, "quantize_s": 0.0}
    peaks: dict[str, int | None] = {}

    peak.start()
    start = time.perf_counter()
    dense = trained_like_(empty_model(name, device), seed)
    dense_bytes = sum(4 * t.numel() for t in dense.state_dict().values())
    stages["generate_s"] = time.perf_counter() - start  # not part of compress_s: stands in for a checkpoint
    peaks["generate"] = peak.read()

    peak.start()
    layers = select_layers(dense)
    if len(layers) != len(settings["kept"]):
        raise ConfigError(f"{name}: expected {len(settings['kept'])} layers, found {len(layers)}")
    compressed = [_compress_layer(n, m, i, settings, seed, stages) for i, (n, m) in enumerate(layers)]
    del dense, layers
    cm = CompressedModel(model_name=name, layers=compressed, metadata={"source": "trained-like random weights"})
    peaks["prune_quantize"] = peak.read()

    peak.start()
    start = time.perf_counter()
    save(cm, out_path)
    stages["encode_write_s"] = time.perf_counter() - start
    peaks["encode_write"] = peak.read()
    written = _fingerprint(cm)
    del cm, compressed  # a reader starts from the file alone

    peak.start()
    start = time.perf_counter()
    loaded = load_compressed(out_path)
    stages["read_s"] = time.perf_counter() - start
    start = time.perf_counter()
    decoded = to_dense_module(loaded, device=device)
    if decoded.state_dict()[f"{loaded.layers[-1].name}.weight"].is_cuda:
        torch.cuda.synchronize()
    stages["decode_dense_s"] = time.perf_counter() - start
    peaks["read_decode"] = peak.read()
    if _fingerprint(loaded) != written:
        raise AssertionError("the file read back differs from the compressed model that was written")
    _check_decoded(decoded, loaded)
    pipeline_peak = max(p for p in peaks.values() if p is not None) if peak.available else None
    ru_pipeline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del decoded

    report = inspect_file(out_path)
    for row, paper_name, kept in zip(report["layers"], settings["names"], settings["kept"]):
        row["paper_name"], row["paper_kept_pct"] = paper_name, 100.0 * kept
    compress_s = stages["prune_s"] + stages["quantize_s"] + stages["encode_write_s"]
    peak_rss = pipeline_peak if pipeline_peak is not None else ru_pipeline
    return {
        "model": name,
        "stand_in_for": model if quick else None,
        "device": str(device),
        "weights": "Laplace(He scale) weights, N(0, 0.01^2) biases: trained-like stand-ins, no retraining",
        "compress_s": compress_s,
        "decode_s": stages["read_s"] + stages["decode_dense_s"],
        "stages_s": stages,
        "peak_rss_bytes": peak_rss,
        "peak_rss_source": "VmHWM per stage (/proc/self/clear_refs reset)" if pipeline_peak is not None else "ru_maxrss",
        "peak_rss_over_dense": peak_rss / dense_bytes,
        "baseline_rss_bytes": baseline_rss,
        "pipeline_rss_over_dense": (peak_rss - baseline_rss) / dense_bytes if baseline_rss is not None else None,
        "stage_peak_rss_bytes": peaks,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "file_bytes": report["file_bytes"],
        "dense_bytes": dense_bytes,
        "ratio": dense_bytes / report["file_bytes"],
        "total": report["total"],
        "layers": report["layers"],
        "targets": {"compress_s": 60.0, "decode_s": 1.0, "peak_rss_over_dense": 2.0} if name == "vgg16" else None,
        "machine": machine_info({"torch": torch.get_num_threads()}),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
