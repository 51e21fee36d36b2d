"""Optional numba: the one place that imports it, decides whether it is used, and compiles with it.

numba accelerates the entropy decoders (:mod:`deepcompress.coding`) and the sparse kernels
(:mod:`deepcompress.runtime.kernels`) but is never required ("fast" extra). The decoders are written
once as plain Python over numpy arrays, so a file is always readable with numpy and the standard
library: when numba is installed, :func:`maybe_jit` compiles the same function (``nogil`` so layers
decode on several threads); without it the Python original runs, slowly but with identical results.
Set ``DEEPCOMPRESS_NO_NUMBA=1`` to force the fallback everywhere (the decoders and the runtime).
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])

try:  # numba is an optional accelerator ("fast" extra), never required
    if os.environ.get("DEEPCOMPRESS_NO_NUMBA"):
        raise ImportError("disabled by DEEPCOMPRESS_NO_NUMBA")
    import numba
except ImportError:
    numba = None  # type: ignore[assignment]

HAVE_NUMBA: bool = numba is not None
"""Whether numba is installed and not disabled: the only flag the package reads."""


def maybe_jit(func: F) -> F:
    """Compile ``func`` with numba (nopython, nogil, cached) when available, else return it unchanged.

    The Python original stays reachable as ``func.py_func`` in both cases so tests can check that
    the two paths agree.
    """
    if numba is None:
        func.py_func = func  # type: ignore[attr-defined]
        return func
    return numba.njit(nogil=True, cache=True)(func)  # type: ignore[return-value]
