"""The optional C extension ``_simd.c``: AVX-512 kernels and the thread pool they run on.

``setup.py`` builds ``deepcompress.runtime._simd`` as an optional extension; where the compiler was
missing, the build failed, or the CPU lacks AVX-512 F/BW/VL, :data:`HAVE_SIMD` is ``False`` and the
runtime uses the numba kernels (then torch). The extension is an ordinary CPython module whose
functions take integers (array addresses and sizes): a layer builds its argument tuple once, so a
batch-1 call from ``forward`` to the kernel costs well under a microsecond of dispatch. Its threads
live inside the extension (see the C file's header), not in numba or OpenMP.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

EXTENSION = "deepcompress.runtime._simd"


def _load() -> ModuleType | None:
    """The extension module when it is built and this CPU runs it, else ``None``."""
    try:
        spec = importlib.util.find_spec(EXTENSION)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.has_location:
        return None
    try:
        module = importlib.import_module(EXTENSION)
    except ImportError:
        return None
    if not module.supported():
        return None
    module.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
    return module


LIB: ModuleType | None = _load()
HAVE_SIMD: bool = LIB is not None


def int8_missing() -> str | None:
    """What the opt-in int8 kernel lacks here, in words (``None`` when it runs): the extension, a build
    of it that has the kernel, or the CPU's AVX-512 VBMI and VNNI (Zen 4 and Intel since Ice Lake)."""
    if LIB is None:
        return (f"the C extension {EXTENSION} (not built, or this CPU lacks AVX-512 F/BW/VL); "
                "build it with `python setup.py build_ext --inplace`")
    if not hasattr(LIB, "int8_supported"):
        return f"a build of {EXTENSION} with the int8 kernel; rebuild it with `python setup.py build_ext --inplace`"
    if not LIB.int8_supported():
        return "a CPU with AVX-512 VBMI and VNNI (vpermb, vpdpbusd), which this one lacks"
    return None


def set_num_threads(n: int) -> None:
    """Threads the extension's kernels use, the calling thread included (default: the usable CPUs)."""
    if LIB is not None:
        LIB.set_num_threads(int(n))


def num_threads() -> int:
    """Threads the extension's kernels use (1 without the extension)."""
    return int(LIB.num_threads()) if LIB is not None else 1
