"""Machine facts and the measurements every benchmark shares: caches, cache flushing, read bandwidth.

As the README's Benchmarks section says: speed figures are cold-cache medians against a baseline
from the same run, and the floor of a memory-bound kernel is its bytes divided by the measured read
bandwidth.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from deepcompress.jit import numba
from deepcompress.runtime import kernels, simd


def cache_sizes() -> dict[str, int]:
    """Per-level data/unified cache sizes in bytes from sysfs (``{"L1d": ..., "L2": ..., "L3": ...}``)."""
    sizes: dict[str, int] = {}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(root.glob("index*")) if root.is_dir() else []:
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1], 1)
        sizes[f"L{level}{'d' if kind == 'Data' else ''}"] = int(text.rstrip("KMG")) * scale
    return sizes


def last_level_cache_bytes(default: int = 32 * 1024**2) -> int:
    """The largest cache on the machine, ``default`` when sysfs does not say."""
    sizes = cache_sizes()
    return max(sizes.values()) if sizes else default


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def set_threads(n: int) -> dict[str, object]:
    """Use ``n`` threads in torch, numba, the C extension's pool and numpy's BLAS; return what each reports afterwards."""
    torch.set_num_threads(n)
    simd.set_num_threads(n)
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    blas: object = "unknown (threadpoolctl not installed)"
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(n)
        blas = [
            {"library": i["internal_api"], "version": i.get("version"), "threads": i["num_threads"]}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
    except ImportError:
        pass
    return {"torch": torch.get_num_threads(), "numba": kernels.num_threads(), "extension": simd.num_threads(),
            "blas": blas}


def machine_info(threads: dict[str, object]) -> dict[str, object]:
    """CPU, cores, caches, threads and library versions for a results file."""
    versions = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}
    for name in ("scipy", "numba", "matplotlib"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "caches_bytes": cache_sizes(),
        "threads": threads,
        "blas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")},
        "versions": versions,
        "platform": platform.platform(),
    }


class CacheFlusher:
    """Evicts caches by reading one float per 64-byte line of a buffer twice the last-level cache."""

    def __init__(self, nbytes: int) -> None:
        self.buffer = np.ones(max(nbytes, 1 << 20) // 4, dtype=np.float32)

    def __call__(self) -> float:
        return float(self.buffer[::16].sum())


def read_bandwidth(buffer: np.ndarray, repeats: int = 5) -> float:
    """Best-of-``repeats`` read bandwidth in bytes/s of summing ``buffer`` with the kernels' threads."""
    reduce = _parallel_sum if numba is not None else np.sum
    reduce(buffer)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        reduce(buffer)
        best = min(best, time.perf_counter() - start)
    return buffer.nbytes / best


if numba is not None:

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def _parallel_sum(a):  # type: ignore[no-untyped-def]
        total = 0.0
        for i in numba.prange(a.size):
            total += a[i]
        return total
