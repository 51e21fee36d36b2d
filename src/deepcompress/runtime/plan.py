"""Which layout a layer's batch-1 product runs on, chosen by measurement when the layer is built.

Three layouts take a batch-1 product on the C extension: the packed CSR (:mod:`.packed`, gathers the
inputs), the sliced one and dense codes (:mod:`.formats`). Which is fastest depends on the layer's
density, shape and codebook and on the machine (cache sizes, gather speed, bandwidth), so with
``format="auto"`` every layout that can pay is built and timed on this machine (interleaved, median
of a few warm calls on a random input) and the fastest kept; the others are dropped. The choice and
the timings are recorded on the module (shown in its ``repr``). A named format is honoured as is.

``int8`` is a fourth, lossy layout (:class:`~deepcompress.runtime.formats.Int8Codes`): int8 weights
times an input rounded to int8 per 64-input block. ``auto`` never picks it, since it changes the
outputs (within the bound tests/test_runtime_int8.py derives); a caller asks for it by name. It needs
AVX-512 VBMI and VNNI besides the extension (:func:`require_int8`).
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np

from deepcompress.choices import Choice
from deepcompress.errors import ConfigError
from deepcompress.runtime import simd
from deepcompress.runtime.formats import NARROW_SLAB, SLAB, DenseCodes, Int8Codes, SlicedCodebook
from deepcompress.runtime.packed import PackedCodebookCSR

# (x address, out address) -> None: out = W x + bias for one input
Kernel = Callable[[int, int], None]

# Dense codes are only tried when their bytes are at most this multiple of the packed CSR words: below
# ~25% density they read more bytes than an index format and would not win.
DENSE_MAX_BYTES_RATIO = 2.0
# Timed calls per candidate (after two warm-up calls each).
REPEATS = 7
SINGLE = "/1 thread"  # suffix of a single-thread variant's name in the timings


class Format(Choice):
    """The layout of a layer's batch-1 product on the C extension (see the module docstring)."""

    AUTO = "auto"
    CSR = "csr"
    SLICED = "sliced"
    DENSE = "dense"
    INT8 = "int8"  # lossy: opt-in only, never among auto's candidates


def require_int8() -> None:
    """Raise ``ConfigError`` naming what is missing when the int8 kernel cannot run here."""
    missing = simd.int8_missing()
    if missing is not None:
        raise ConfigError(f"format 'int8' needs {missing}; use format='auto' (fp32)")


def candidates(packed: PackedCodebookCSR, fmt: str | Format) -> list[Format]:
    """The formats to build for ``packed`` and the request ``fmt`` (one when it is named)."""
    chosen = Format.parse(fmt, "format")
    if chosen is Format.SLICED and not SlicedCodebook.accepts(packed):
        raise ConfigError(f"format 'sliced' takes codebooks of <= 64 entries, got {packed.code_bits} bits, and "
                          f"<= {SLAB << 16} columns, got {packed.cols}; use 'auto'")
    if chosen is Format.DENSE and not DenseCodes.accepts(packed):
        raise ConfigError("format 'dense' takes codebooks of <= 255 entries; use 'auto'")
    if chosen is Format.INT8:
        require_int8()
        if not Int8Codes.accepts(packed):
            raise ConfigError("format 'int8' takes codebooks of <= 255 entries; use 'auto'")
    if chosen is not Format.AUTO:
        return [chosen]
    found = [Format.CSR]
    if SlicedCodebook.accepts(packed):
        found.append(Format.SLICED)
    if DenseCodes.accepts(packed) and DenseCodes.dense_bytes(packed) <= DENSE_MAX_BYTES_RATIO * packed.words.nbytes:
        found.append(Format.DENSE)
    return found


def layout_for(fmt: Format, packed: PackedCodebookCSR) -> object:
    """The arrays ``fmt``'s kernel reads (the packed CSR itself for ``csr``)."""
    if fmt is Format.CSR:
        return packed
    if fmt is Format.SLICED:
        return SlicedCodebook.from_packed(packed)
    if fmt is Format.DENSE:
        return DenseCodes.from_packed(packed)
    if fmt is Format.INT8:
        return Int8Codes.from_packed(packed)
    raise ValueError(f"expected a concrete format, got {fmt!r}")


def bind(fmt: Format, layout: object, bias: np.ndarray | None, parallel: bool = True) -> Kernel:
    """The batch-1 kernel of ``fmt`` on ``layout``: it holds the arrays' addresses (bound once here, so
    a call passes only the input's and output's) and references to the arrays, which stay alive with it.
    ``parallel=False`` keeps the product on the calling thread."""
    lib = simd.LIB
    if lib is None:
        raise ConfigError("the C extension is not available; formats other than the numba/torch CSR need it")
    b, par = (0 if bias is None else bias.ctypes.data), int(parallel)
    if fmt is Format.CSR and isinstance(layout, PackedCodebookCSR):
        p = layout
        args = (lib.csr_spmv, p.ptr.ctypes.data, p.words.ctypes.data, p.codebook.ctypes.data, p.n_blocks,
                p.code_bits, p.col_bits, p.rows, p.nnz)
    elif fmt is Format.SLICED and isinstance(layout, SlicedCodebook):
        s = layout
        args = (lib.sliced_spmv, s.gptr.ctypes.data, s.cptr.ctypes.data, s.slabs.ctypes.data, s.counts.ctypes.data,
                s.words.ctypes.data, s.codebook.ctypes.data, s.n_slabs, s.cols, s.rows, int(s.wide), s.slab)
    elif fmt is Format.DENSE and isinstance(layout, DenseCodes):
        d = layout
        args = (lib.dense_spmv, d.codes.ctypes.data, d.stride, int(d.nibble), d.table.ctypes.data, d.table_size,
                d.cols, d.rows)
    elif fmt is Format.INT8 and isinstance(layout, Int8Codes):
        q = layout
        args = (lib.int8_spmv, q.codes.ctypes.data, q.stride, q.table.ctypes.data, q.table_size, q.scale, q.cols,
                q.rows)
    else:
        raise ValueError(f"expected the layout of format {fmt!r}, got {type(layout).__name__}")
    # the C function with every argument but (x, out) bound: calling it runs no Python code
    kernel = functools.partial(*args, b, par)
    kernel.arrays = (layout, bias)  # type: ignore[attr-defined]  # alive as long as their addresses are used
    return kernel


def measure(kernels: dict[str, Kernel], cols: int, rows: int, repeats: int = REPEATS) -> dict[str, float]:
    """Median microseconds of each kernel on one random input, calls interleaved."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(cols).astype(np.float32)
    out = np.empty(rows, dtype=np.float32)
    xa, oa = x.ctypes.data, out.ctypes.data
    samples: dict[str, list[float]] = {name: [] for name in kernels}
    for kernel in kernels.values():
        kernel(xa, oa)
        kernel(xa, oa)
    for _ in range(repeats):
        for name, kernel in kernels.items():
            start = time.perf_counter()
            kernel(xa, oa)
            samples[name].append(time.perf_counter() - start)
    return {name: float(np.median(s) * 1e6) for name, s in samples.items()}


NARROW = "/31"  # suffix of the sliced layout with 31-column slabs


def layouts_for(packed: PackedCodebookCSR, fmt: str | Format) -> dict[str, tuple[Format, object]]:
    """The layouts to time for ``packed`` and the request ``fmt``, by name: each candidate format's, and
    for ``sliced`` also its 31-column variant (``sliced/31``, see :class:`SlicedCodebook`)."""
    found: dict[str, tuple[Format, object]] = {}
    for f in candidates(packed, fmt):
        found[f.value] = (f, layout_for(f, packed))
        if f is Format.SLICED and SlicedCodebook.accepts(packed, NARROW_SLAB):
            found[f.value + NARROW] = (f, SlicedCodebook.from_packed(packed, NARROW_SLAB))
    return found


def layout_name(fmt: Format, layout: object) -> str:
    """The name :func:`layouts_for` gives ``layout`` (shown in a layer's repr and benchmark results)."""
    narrow = isinstance(layout, SlicedCodebook) and layout.slab == NARROW_SLAB
    return fmt.value + (NARROW if narrow else "")


def choose(packed: PackedCodebookCSR, bias: np.ndarray | None, fmt: str | Format
           ) -> tuple[Format, bool, object, Kernel, dict[str, float]]:
    """``(format, parallel, layout, kernel, timings in us)``: the named format or the fastest candidate
    layout, on the pool or on the calling thread alone, whichever measured faster (a loaded machine can
    make the pool's wake-ups cost more than the second core gains)."""
    layouts = layouts_for(packed, fmt)
    kernels: dict[str, Kernel] = {}
    variants: dict[str, tuple[str, bool]] = {}
    for name, (f, layout) in layouts.items():
        kernels[name], variants[name] = bind(f, layout, bias, True), (name, True)
        if simd.num_threads() > 1:
            kernels[name + SINGLE], variants[name + SINGLE] = bind(f, layout, bias, False), (name, False)
    if len(kernels) == 1:
        (name, kernel), = kernels.items()
        f, layout = layouts[name]
        return f, True, layout, kernel, {}
    times = measure(kernels, packed.cols, packed.rows)
    best = min(times, key=times.get)
    name, parallel = variants[best]
    f, layout = layouts[name]
    return f, parallel, layout, kernels[best], times
