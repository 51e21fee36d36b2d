"""Compressing a full-size network without retraining: time and memory of every stage (paper Tables 4-5).

``run_scale_benchmark("vgg16")`` takes VGG-16 (138M weights, 553 MB fp32) through the library's own
path on the dense model -- :func:`~deepcompress.prune.prune_` to the paper's kept fraction per layer,
:func:`~deepcompress.quantize.quantize_` (1-D k-means, conv 8 bits, fc 5 bits),
:func:`~deepcompress.quantize.export_compressed`, :func:`~deepcompress.format.save`, then
:func:`~deepcompress.format.load_compressed` and :func:`~deepcompress.runtime.dense.to_dense_module` -- and
reports wall time and peak resident memory per stage and the per-layer table of the written file.
Nothing here prunes, clusters or packages a layer by itself: what is measured is what a user gets.

No ImageNet training happens here, so the weights are *trained-like* stand-ins: torch's default
initialisation is uniform, whereas trained conv/fc weights are peaked at zero with heavy tails, so
every weight is drawn from a Laplace distribution with He scale (std ``sqrt(2 / fan_in)``), every bias
from a normal with std 0.01. Sizes of the entropy-coded streams depend on that choice; the stage
times and memory do not, to first order.

Memory is whole-process resident memory (``VmRSS`` / ``VmHWM`` of ``/proc/self/status``; tracemalloc
does not see torch's allocations), the imports included: the peak of each stage is read after the
stage with the high-water mark reset before it, and the resident memory left after each stage says
what the next one starts from.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from torch import nn

from deepcompress.malloc import pin_mmap_threshold
from deepcompress.perf.machine import machine_info
from deepcompress.compressed import CompressedModel
from deepcompress.runtime.dense import to_dense_module
from deepcompress.errors import ConfigError
from deepcompress.format import inspect_file, load_compressed, save
from deepcompress.models import build_model
from deepcompress.prune import PruneConfig, prune_
from deepcompress.prune.masks import CHUNK
from deepcompress.quantize import QuantizeConfig, export_compressed, quantize_
from deepcompress.selection import layer_kind, select_layers

T = TypeVar("T")

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

LIBRARY_PATH = ["prune_", "quantize_", "export_compressed", "save", "load_compressed", "to_dense_module"]


def trained_like_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every weight layer's weight with Laplace(He scale) and bias with N(0, 0.01^2), in place.

    Generated in chunks so no temporary as large as a layer is made (VGG-16's fc6 is 411 MB).
    """
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for _, module in select_layers(model):
            fan_in = module.weight[0].numel()
            b = math.sqrt(1.0 / fan_in)  # Laplace scale b: std = sqrt(2) * b = sqrt(2 / fan_in)
            flat = module.weight.view(-1)
            for start in range(0, flat.numel(), CHUNK):
                part = flat[start : start + CHUNK]
                part.uniform_(-1.0, 1.0, generator=generator)
                sign = torch.sign(part)
                # |u| ~ U[0, 1) -> -b log(1 - |u|) ~ Exp(1/b): with the sign, a Laplace law (inverse CDF)
                part.abs_().clamp_(max=1.0 - 2.0**-24).neg_().log1p_().mul_(-b).mul_(sign)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.01, generator=generator)
    return model


def _built(name: str, device: str) -> nn.Module:
    """The architecture built eagerly on ``device``, as one loads a checkpoint into it.

    Not :func:`~deepcompress.runtime.dense.empty_model`: materialising meta tensors makes torch import sympy
    (about 36 MB resident), which a process that only compresses would not pay.
    """
    with torch.device(device):
        return build_model(name).eval()


def paper_configs(model: nn.Module, settings: dict[str, Any], seed: int) -> tuple[PruneConfig, QuantizeConfig]:
    """The paper's per-layer pruning targets and weight bits for ``model``'s weight layers, in order."""
    layers = select_layers(model)
    if len(layers) != len(settings["kept"]):
        raise ConfigError(f"expected {len(settings['kept'])} weight layers, found {len(layers)}")
    sparsity = {name: 1.0 - kept for (name, _), kept in zip(layers, settings["kept"])}
    bits = {name: settings["bits"][layer_kind(module)] for name, module in layers}
    prune_cfg = PruneConfig(method="sparsity", sparsity=sparsity, adjust_dropout=False)
    return prune_cfg, QuantizeConfig(bits=bits, init="linear", seed=seed)


def _status(field: str) -> int | None:
    """A memory figure of ``/proc/self/status`` in bytes (``VmRSS``, ``VmHWM``), ``None`` off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _Stages:
    """Runs the pipeline's stages one by one and records each one's wall time, peak and final RSS.

    The peak is Linux's ``VmHWM`` after resetting it through ``/proc/self/clear_refs`` before the
    stage; where the kernel refuses the reset (``available`` False) stage peaks are ``None`` and only
    the process's lifetime peak (``ru_maxrss``) is known.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.available = self._reset_peak()
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, int | None] = {}
        self.rss_after: dict[str, int | None] = {}

    @staticmethod
    def _reset_peak() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, timed (device work included) and with its peak resident memory recorded."""
        if self.available:
            self._reset_peak()
        start = time.perf_counter()
        result = fn(*args)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.seconds[f"{name}_s"] = time.perf_counter() - start
        self.peak[name] = _status("VmHWM") if self.available else None
        self.rss_after[name] = _status("VmRSS")
        return result


def _fingerprint(cm: CompressedModel) -> list[tuple[str, int]]:
    """CRC-32 of every layer's arrays (values, not dtypes): checks the round trip without keeping
    two copies of the model alive."""
    out = []
    for layer in cm.layers:
        crc = 0
        for array in (layer.codebook, layer.positions.astype(np.int64), layer.codes.astype(np.int64), layer.bias):
            crc = zlib.crc32(np.ascontiguousarray(array) if array is not None else b"-", crc)
        out.append((layer.name, crc))
    return out


def _check_decoded(model: nn.Module, cm: CompressedModel) -> None:
    """Every decoded weight equals ``codebook[codes]`` at its position and zero elsewhere (no dense copy)."""
    state = model.state_dict()
    for layer in cm.layers:
        flat = state[f"{layer.name}.weight"].view(-1).cpu()
        expected = torch.from_numpy(layer.codebook[layer.codes])
        exact = torch.equal(flat[torch.from_numpy(layer.positions)], expected)
        if not exact or int(flat.count_nonzero()) != int(expected.count_nonzero()):
            raise AssertionError(f"decoded layer {layer.name!r} differs from the compressed model")


def _compress(stages: _Stages, name: str, seed: int, device: str, path: Path) -> tuple[int, list[tuple[str, int]]]:
    """Generate the dense model, then prune, quantize, export and write it to ``path`` as a user
    would; returns its dense bytes and the fingerprint of what was written."""
    settings = PAPER_SETTINGS[name]
    # generate_s is not part of compress_s: it stands in for loading a trained checkpoint
    dense = stages.run("generate", lambda: trained_like_(_built(name, device), seed))
    dense_bytes = sum(4 * t.numel() for t in dense.state_dict().values())
    prune_cfg, quantize_cfg = paper_configs(dense, settings, seed)
    stages.run("prune", prune_, dense, prune_cfg)
    stages.run("quantize", quantize_, dense, quantize_cfg)
    metadata = {"source": "trained-like random weights"}
    cm = stages.run("export", export_compressed, dense, name, settings["index_bits"], metadata)
    del dense  # the compressed model is all that is written; parametrized modules sit in reference
    gc.collect()  # cycles (torch.nn.utils.parametrize), so only the collector frees the masks
    stages.run("encode_write", save, cm, path)
    return dense_bytes, _fingerprint(cm)


def _decode(stages: _Stages, device: str, path: Path, written: list[tuple[str, int]]) -> None:
    """Read ``path`` and decode it into a dense module; check both against what was written."""
    loaded = stages.run("read", load_compressed, path)
    decoded = stages.run("decode_dense", lambda: to_dense_module(loaded, device=device))
    if _fingerprint(loaded) != written:
        raise AssertionError("the file read back differs from the compressed model that was written")
    _check_decoded(decoded, loaded)


def _paper_table(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The written file's per-layer table (from its real bytes), with the paper's names and densities."""
    report = inspect_file(path)
    for row, paper_name, kept in zip(report["layers"], settings["names"], settings["kept"]):
        row["paper_name"], row["paper_kept_pct"] = paper_name, 100.0 * kept
    return report


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
    Returns a JSON-ready dict: ``compress_s`` (prune + quantize + export + encode and write),
    ``decode_s`` (read and decode into a dense module), ``stages_s``, ``peak_rss_bytes`` (whole
    process) with ``stage_peak_rss_bytes`` and ``stage_end_rss_bytes``, ``file_bytes``,
    ``dense_bytes``, ``ratio``, ``layers`` (the paper's table columns from the file) and ``machine``.
    """
    if model not in ("vgg16", "alexnet"):
        raise ConfigError(f"run_scale_benchmark: expected model 'vgg16' or 'alexnet', got {model!r}")
    name = QUICK_STAND_IN if quick else model
    settings = PAPER_SETTINGS[name]
    if out_path is None:
        with tempfile.TemporaryDirectory(prefix="dc-scale-") as tmp:
            return run_scale_benchmark(model, quick, seed, device, Path(tmp) / f"{name}.dcz")
    out_path = Path(out_path)
    pin_mmap_threshold()  # freed per-layer chunks go back to the OS (see deepcompress.malloc)
    baseline_rss = _status("VmRSS")
    stages = _Stages(str(device))
    dense_bytes, written = _compress(stages, name, seed, device, out_path)
    _decode(stages, device, out_path, written)
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    report = _paper_table(out_path, settings)
    s = stages.seconds
    compress_s = s["prune_s"] + s["quantize_s"] + s["export_s"] + s["encode_write_s"]
    peak_rss = max(p for p in stages.peak.values() if p is not None) if stages.available else lifetime_peak
    return {
        "model": name,
        "stand_in_for": model if quick else None,
        "device": str(device),
        "path": LIBRARY_PATH,
        "weights": "Laplace(He scale) weights, N(0, 0.01^2) biases: trained-like stand-ins, no retraining",
        "compress_s": compress_s,
        "decode_s": s["read_s"] + s["decode_dense_s"],
        "stages_s": s,
        "peak_rss_bytes": peak_rss,
        "peak_rss_source": "VmHWM per stage (/proc/self/clear_refs reset)" if stages.available else "ru_maxrss",
        "peak_rss_over_dense": peak_rss / dense_bytes,
        "baseline_rss_bytes": baseline_rss,
        "pipeline_rss_over_dense": (peak_rss - baseline_rss) / dense_bytes if baseline_rss is not None else None,
        "stage_peak_rss_bytes": stages.peak,
        "stage_end_rss_bytes": stages.rss_after,
        "ru_maxrss_bytes": lifetime_peak,
        "file_bytes": report["file_bytes"],
        "dense_bytes": dense_bytes,
        "ratio": dense_bytes / report["file_bytes"],
        "total": report["total"],
        "layers": report["layers"],
        "targets": {"compress_s": 60.0, "decode_s": 1.0, "peak_rss_over_dense": 2.0} if name == "vgg16" else None,
        "machine": machine_info({"torch": torch.get_num_threads()}),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
