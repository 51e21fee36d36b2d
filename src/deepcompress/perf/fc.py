"""The paper's Table 8 (section 6.1) on this machine: fc layers at batch 1 and 64, dense vs sparse.

Weights are synthetic (normal), pruned by magnitude to the paper's densities and quantised to a 5-bit
linearly spaced codebook (paper section 3.2's linear initialisation, without fine-tuning: speed does
not depend on the centroid values). Each layer is timed, interleaved in one process, as: dense torch
``F.linear``, dense numpy (OpenBLAS) ``matmul``, pruned fp32 CSR in scipy and in torch, and ours
(:class:`SparseCodebookLinear`) on the backend ``auto`` picks (``simd``: the C extension where built,
whose batch-1 layout -- csr, sliced or dense codes -- is chosen per layer by measurement when the
layer is built, and recorded in the row's ``format``) and, so progress shows, on the previous kernels:
``ours_csr`` (the packed CSR layout of :mod:`deepcompress.runtime.packed`, on the extension's pool)
and ``ours_numba`` (the portable numba kernel). At batch 1, where the CPU runs it, ``ours_int8`` times
the opt-in lossy int8 format (``format="int8"``) in the same loops and against the same baseline; its
figures are kept under each row's ``int8`` and its (larger, expected) error out of the fp32 kernels'
``max_relative_error``. The headline is the cold-cache median speedup of ours over the fastest dense
routine; see the README's Benchmarks section and docs/INFERENCE.md.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import scipy.sparse
import torch
from torch.nn import functional as F

from deepcompress.perf.machine import (
    CacheFlusher,
    last_level_cache_bytes,
    machine_info,
    read_bandwidth,
    set_threads,
)
from deepcompress.compressed import CompressedLayer
from deepcompress.errors import ConfigError
from deepcompress.runtime import Backend, SparseCodebookLinear, available_backends, kernels, simd
from deepcompress.runtime.dispatch import resolve
from deepcompress.runtime.plan import layout_name

# name: (out, in, kept fraction, paper CPU batch-1 speedup of sparse over dense, Table 8)
PAPER_LAYERS: dict[str, tuple[int, int, float, float]] = {
    "alexnet_fc6": (4096, 9216, 0.09, 2.45),
    "alexnet_fc7": (4096, 4096, 0.09, 4.83),
    "alexnet_fc8": (1000, 4096, 0.25, 1.27),
    "vgg16_fc6": (4096, 25088, 0.04, 9.28),
    "vgg16_fc7": (4096, 4096, 0.04, 9.86),
    "vgg16_fc8": (1000, 4096, 0.23, 1.00),
}
DENSE_KERNELS = ("dense_torch", "dense_numpy")
# "ours" runs on the backend "auto" picks; "ours_csr" is the packed CSR layout on the C extension (timed
# when it is built), "ours_numba" the numba kernel (timed when numba is there).
INT8 = "ours_int8"  # the opt-in int8 format, batch 1 only, where the CPU runs it
KERNELS = DENSE_KERNELS + ("csr_scipy", "csr_torch", "ours", "ours_csr", "ours_numba", INT8)


def synthetic_layer(name: str, out: int, inp: int, density: float, rng: np.random.Generator) -> CompressedLayer:
    """Normal weights, the largest ``density`` fraction by magnitude kept, 5-bit linear codebook."""
    weights = rng.standard_normal(out * inp, dtype=np.float32)
    keep = max(1, int(round(density * weights.size)))
    positions = np.sort(np.argpartition(np.abs(weights), weights.size - keep)[-keep:])
    values = weights[positions]
    del weights
    codebook = np.linspace(values.min(), values.max(), 32, dtype=np.float32)
    step = float(codebook[1] - codebook[0]) or 1.0
    codes = np.clip(np.rint((values - codebook[0]) / step), 0, 31).astype(np.int64)
    return CompressedLayer(name, "linear", (out, inp), codebook, positions, codes, None, 5, 5)


COLUMN_OUTPUT = ("csr_scipy", "csr_torch")  # kernels that return (out, batch)


def _kernels(layer: CompressedLayer, batch: int) -> tuple[dict[str, Callable[[], object]], dict[str, int], dict]:
    """The timed callables for one layer and batch, each representation's bytes, and their input state.

    The callables read the current input from the returned state; :func:`_new_input` refreshes it.
    """
    dense = layer.dense_weight()
    dense_t = torch.from_numpy(dense)
    module = SparseCodebookLinear.from_compressed(layer)
    numba_module = SparseCodebookLinear.from_compressed(layer, backend=Backend.NUMBA) if kernels.HAVE_NUMBA else None
    csr_module = SparseCodebookLinear.from_compressed(layer, backend=Backend.SIMD, format="csr") if kernels.HAVE_SIMD else None
    crow, col, values = module.packed.csr_arrays()
    csr_scipy = scipy.sparse.csr_matrix(
        (values, col.astype(np.int32), crow.astype(np.int32)), shape=layer.shape
    )
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        csr_torch = torch.sparse_csr_tensor(
            torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(values), size=layer.shape,
            check_invariants=False,
        )
    state: dict = {"batch": batch, "in": layer.shape[1], "backend": resolve(module.backend, module.packed).value,
                   "format": layout_name(module.format, module._layout) if module.format is not None else None,
                   "format_us": module.format_us}
    calls: dict[str, Callable[[], object]] = {
        "dense_torch": lambda: F.linear(state["x_t"], dense_t),
        "dense_numpy": (lambda: dense @ state["x_col"]) if batch == 1 else (lambda: state["x"] @ dense.T),
        "csr_scipy": lambda: csr_scipy @ state["x_col"],
        "csr_torch": lambda: torch.sparse.mm(csr_torch, state["x_col_t"]),
        "ours": lambda: module(state["x_t"]),
    }
    if numba_module is not None:
        calls["ours_numba"] = lambda: numba_module(state["x_t"])
    if csr_module is not None:
        calls["ours_csr"] = lambda: csr_module(state["x_t"])
    int8_module = None
    if batch == 1 and simd.int8_missing() is None:
        int8_module = SparseCodebookLinear.from_compressed(layer, backend=Backend.SIMD, format="int8")
        calls[INT8] = lambda: int8_module(state["x_t"])
    ours_bytes = module._layout.nbytes if batch == 1 and module._layout is not None else module.packed.nbytes
    nbytes = {
        "dense_torch": dense.nbytes,
        "dense_numpy": dense.nbytes,
        "csr_scipy": values.nbytes + 4 * (col.size + crow.size),
        "csr_torch": values.nbytes + 8 * (col.size + crow.size),
        "ours": ours_bytes,
    }
    if numba_module is not None:
        nbytes["ours_numba"] = numba_module.packed.nbytes
    if csr_module is not None:
        nbytes["ours_csr"] = csr_module.packed.nbytes
    if int8_module is not None:
        nbytes[INT8] = int8_module._layout.nbytes  # type: ignore[union-attr]
    return calls, nbytes, state


def _new_input(state: dict, rng: np.random.Generator) -> np.ndarray:
    """Draw a fresh ``(batch, in)`` input in every layout the kernels take; return it."""
    x = rng.standard_normal((state["batch"], state["in"]), dtype=np.float32)
    state["x"] = x
    state["x_t"] = torch.from_numpy(x)
    state["x_col"] = np.ascontiguousarray(x.T) if state["batch"] > 1 else x[0]
    state["x_col_t"] = torch.from_numpy(np.ascontiguousarray(x.T))
    return x


def _relative_errors(calls: dict[str, Callable[[], object]], dense: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """``||y - y_ref|| / ||y_ref||`` of each kernel against a float64 dense product on input ``x``."""
    batch, out = x.shape[0], dense.shape[0]
    x64 = x.astype(np.float64)
    reference = np.concatenate(  # row chunks keep the float64 copy of the weight small
        [x64 @ dense[i:i + 512].astype(np.float64).T for i in range(0, out, 512)], axis=1
    )
    norm = float(np.linalg.norm(reference)) or 1.0
    errors = {}
    for name, call in calls.items():
        y = call()
        arr = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
        arr = arr.reshape(out, batch).T if name in COLUMN_OUTPUT else arr.reshape(batch, out)
        errors[name] = float(np.linalg.norm(arr - reference) / norm)
    return errors


def time_calls(calls: dict[str, Callable[[], object]], repeats: int, flush: Callable[[], float] | None,
          rng: np.random.Generator) -> dict[str, list[float]]:
    """Interleaved timings (seconds) of each call, in a fresh random order every repetition."""
    names = list(calls)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for i in rng.permutation(len(names)):
            if flush is not None:
                flush()
                yield_cpu()
            start = time.perf_counter()
            calls[names[i]]()
            samples[names[i]].append(time.perf_counter() - start)
    return samples


def yield_cpu() -> None:
    """Give up the CPU between a cache flush and the timed call: on a shared machine the flush uses up
    the time slice and the call would otherwise absorb the wait for the next one (measured: LeNet-5,
    ~250 us warm, took 7 ms "cold" at load average 10). Fair to every kernel, and the cache stays cold."""
    if hasattr(os, "sched_yield"):
        os.sched_yield()


def _stats(seconds: list[float], batch: int) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6 / batch
    return {"median": float(np.median(us)), "min": float(us.min()), "max": float(us.max())}


def run_fc_benchmark(
    layers: Sequence[str] = tuple(PAPER_LAYERS),
    batches: Sequence[int] = (1, 64),
    repeats: int = 21,
    seed: int = 0,
    quick: bool = False,
    threads: int | None = None,
) -> dict:
    """Time the paper's Table 8 layers; return a JSON-ready dict (see ``benchmarks/fc.py``).

    ``quick`` shrinks every layer 16x per side and uses 3 repetitions and a small flush buffer: for the
    test suite, whose timings mean nothing. Times are microseconds per input.
    """
    unknown = [n for n in layers if n not in PAPER_LAYERS]
    if unknown:
        raise ConfigError(f"unknown fc layers {unknown}; expected names from {sorted(PAPER_LAYERS)}")
    if not batches or any(int(b) < 1 for b in batches):
        raise ConfigError(f"expected batch sizes >= 1, got {list(batches)}")
    if repeats < 1:
        raise ConfigError(f"expected repeats >= 1, got {repeats}")
    if quick:
        repeats = min(repeats, 3)
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: recorded, not corrected
    threads_info = set_threads(threads or os.cpu_count() or 1)
    llc = last_level_cache_bytes()
    flusher = CacheFlusher(8 << 20 if quick else max(2 * llc, 64 << 20))
    bandwidth = read_bandwidth(flusher.buffer, repeats=2 if quick else 5)
    rng = np.random.default_rng(seed)
    rows = []
    for name in layers:
        out, inp, density, paper_speedup = PAPER_LAYERS[name]
        if quick:
            out, inp = max(out // 16, 8), max(inp // 16, 8)
        layer = synthetic_layer(name, out, inp, density, rng)
        dense = layer.dense_weight()
        for batch in batches:
            calls, nbytes, state = _kernels(layer, int(batch))
            errors = _relative_errors(calls, dense, _new_input(state, rng))
            _new_input(state, rng)  # the timed input differs from the checked one
            for call in calls.values():  # warm-up: compile, page in, fill allocator caches
                call()
            cold = time_calls(calls, repeats, flusher, rng)
            warm = time_calls(calls, repeats, None, rng)
            rows.append(_row(name, out, inp, density, paper_speedup, int(batch), layer.nnz, nbytes,
                             cold, warm, errors, bandwidth)
                        | {"backend": state["backend"], "format": state["format"] if batch == 1 else "csr",
                           "format_us": state["format_us"]})
    return {
        "benchmark": "fc (paper Table 8)",
        "units": "microseconds per input; bytes; GB/s = 1e9 bytes/s",
        "quick": quick,
        "repeats": repeats,
        "seed": seed,
        "cold_cache": f"each timed call follows a read of a {flusher.buffer.nbytes >> 20} MiB buffer "
                      f"(2x the {llc >> 20} MiB last-level cache)",
        "numba": kernels.HAVE_NUMBA,
        "backends_available": available_backends(),
        "threads": {"extension": simd.num_threads(), "numba": kernels.num_threads(), "torch": torch.get_num_threads()},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "read_bandwidth_gbs": bandwidth / 1e9,
        "machine": machine_info(threads_info),
        "results": rows,
        "summary": _summary(rows),
    }


def _row(name: str, out: int, inp: int, density: float, paper: float, batch: int, nnz: int,
         nbytes: dict[str, int], cold: dict, warm: dict, errors: dict, bandwidth: float) -> dict:
    cold_s = {k: _stats(v, batch) for k, v in cold.items()}
    warm_s = {k: _stats(v, batch) for k, v in warm.items()}
    fastest = min(DENSE_KERNELS, key=lambda k: cold_s[k]["median"])
    io_bytes = 4 * batch * (inp + out)
    ours_us = cold_s["ours"]["median"]
    floor_us = (nbytes["ours"] + io_bytes) / bandwidth * 1e6 / batch
    dense_floor_us = (nbytes[fastest] + io_bytes) / bandwidth * 1e6 / batch
    row = {
        "layer": name,
        "shape": [out, inp],
        "density": density,
        "nnz": nnz,
        "batch": batch,
        "fastest_dense": fastest,
        "dense_us": cold_s[fastest]["median"],
        "ours_us": ours_us,
        "speedup": cold_s[fastest]["median"] / ours_us,
        "speedup_warm": min(warm_s[k]["median"] for k in DENSE_KERNELS) / warm_s["ours"]["median"],
        "paper_cpu_speedup_batch1": paper,
        "cold_us": cold_s,
        "warm_us": warm_s,
        "bytes": nbytes,
        "achieved_gbs": {k: (nbytes[k] + io_bytes) / batch / (cold_s[k]["median"] * 1e-6) / 1e9 for k in cold_s},
        "ours_bandwidth_fraction": (nbytes["ours"] + io_bytes) / (ours_us * 1e-6 * batch) / bandwidth,
        "floor_us": floor_us,
        "dense_floor_us": dense_floor_us,
        "ours_over_floor": ours_us / floor_us,
        "floor_speedup": dense_floor_us / floor_us,
        "relative_error": errors,
    }
    if INT8 in cold_s:
        int8_us = cold_s[INT8]["median"]
        row["int8"] = {
            "us": int8_us,
            "speedup": cold_s[fastest]["median"] / int8_us,
            "speedup_warm": min(warm_s[k]["median"] for k in DENSE_KERNELS) / warm_s[INT8]["median"],
            "speedup_over_ours": ours_us / int8_us,
            "relative_error": errors[INT8],
            "bandwidth_fraction": (nbytes[INT8] + io_bytes) / (int8_us * 1e-6 * batch) / bandwidth,
        }
    return row


def _summary(rows: list[dict]) -> dict:
    summary = {}
    for batch in sorted({r["batch"] for r in rows}):
        speedups = [r["speedup"] for r in rows if r["batch"] == batch]
        summary[f"batch{batch}_geomean_speedup"] = float(np.exp(np.mean(np.log(speedups))))
        summary[f"batch{batch}_min_speedup"] = float(min(speedups))
    summary["max_relative_error"] = float(max(e for r in rows for k, e in r["relative_error"].items() if k != INT8))
    int8 = [r["int8"] for r in rows if "int8" in r]
    if int8:
        summary["int8_max_relative_error"] = float(max(q["relative_error"] for q in int8))
        summary["batch1_int8_geomean_speedup"] = float(np.exp(np.mean([np.log(q["speedup"]) for q in int8])))
    return summary


def plot_fc(result: dict, path: str) -> None:
    """Bar chart of every kernel's cold speedup over the fastest dense one, per layer and batch (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepcompress.atomic import atomic_write_bytes

    batches = sorted({r["batch"] for r in result["results"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in result["results"] if r["batch"] == batch]
        x = np.arange(len(rows))
        names = KERNELS
        width = 0.8 / len(names)
        for i, kernel in enumerate(names):
            if kernel not in rows[0]["cold_us"]:
                continue
            speed = [r["dense_us"] / r["cold_us"][kernel]["median"] for r in rows]
            ax.bar(x + (i - len(names) / 2 + 0.5) * width, speed, width, label=kernel)
        if batch == 1:
            ax.scatter(x, [r["paper_cpu_speedup_batch1"] for r in rows], marker="_", s=300, color="k",
                       zorder=3, label="paper (MKL CSR)")
            ax.scatter(x, [r["floor_speedup"] for r in rows], marker="v", color="r", zorder=3,
                       label="floor (bytes / bandwidth)")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(x, [r["layer"] for r in rows], rotation=30, ha="right")
        ax.set_ylabel("speedup over fastest dense (cold)")
        ax.set_title(f"batch {batch}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
