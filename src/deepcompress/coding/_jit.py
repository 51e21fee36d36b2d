"""Optional numba acceleration with a pure-Python fallback.

The entropy decoders are written once as plain Python over numpy arrays, so a file is always readable
with numpy and the standard library. When numba is installed, the same function is compiled
(``nogil`` so layers decode on several threads); without it the Python original runs, slowly but
with identical results. Set ``DEEPCOMPRESS_NO_NUMBA=1`` to force the fallback.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])

try:  # numba is an optional accelerator ("fast" extra), never required
    if os.environ.get("DEEPCOMPRESS_NO_NUMBA"):
        raise ImportError("disabled by DEEPCOMPRESS_NO_NUMBA")
    import numba

    HAVE_NUMBA = True
except ImportError:
    HAVE_NUMBA = False


def maybe_jit(func: F) -> F:
    """Compile ``func`` with numba (nopython, nogil, cached) when available, else return it unchanged.

    The Python original stays reachable as ``func.py_func`` in both cases so tests can check that
    the two paths agree.
    """
    if not HAVE_NUMBA:
        func.py_func = func  # type: ignore[attr-defined]
        return func
    return numba.njit(nogil=True, cache=True)(func)  # type: ignore[return-value]
