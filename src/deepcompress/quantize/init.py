"""Centroid initialisations for 1-D k-means (Deep Compression section 3.1, Fig. 4).

The paper compares three: Forgy (random data points), density-based (equal steps of the empirical
CDF) and linear (evenly spaced over ``[min, max]``), and finds linear best because it keeps the
large, rare weights that matter most. k-means++ (Arthur & Vassilvitskii 2007) is added as the usual
general-purpose choice, and ``optimal`` starts Lloyd from the global optimum of the data's fine
histogram (:mod:`deepcompress.quantize.optimal`). Every function here takes the data **sorted
ascending** and returns float64 centroids sorted ascending; :func:`init_centroids` sorts for callers
that have raw data.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from deepcompress.quantize.config import CentroidInit
from deepcompress.quantize.optimal import optimal_init

Seed = int | Sequence[int] | np.random.SeedSequence


def linear_init(xs: np.ndarray, k: int) -> np.ndarray:
    """``k`` centroids evenly spaced over ``[min, max]`` (the paper's default)."""
    return np.linspace(float(xs[0]), float(xs[-1]), k)


def density_init(xs: np.ndarray, k: int) -> np.ndarray:
    """``k`` centroids at the empirical CDF's levels ``(i + 1/2) / k``, ``i = 0..k-1``.

    The level-``p`` centroid is the smallest data value ``v`` with ``CDF(v) >= p``: equal steps along
    the CDF's y-axis projected onto the x-axis, as in the paper's Fig. 4. Repeated values (possible
    when the data has ties) are left to k-means, which re-seeds the resulting empty clusters.
    """
    n = xs.size
    levels = (np.arange(k, dtype=np.float64) + 0.5) / k
    ranks = np.clip(np.ceil(levels * n).astype(np.int64) - 1, 0, n - 1)
    return xs[ranks].astype(np.float64)


def forgy_init(xs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Forgy: ``k`` data points drawn at random without replacement, with distinct values.

    Points are drawn among the distinct values with probability proportional to how often each
    occurs, which is drawing data points while never picking the same value twice.
    """
    values, counts = _distinct(xs)
    if k > values.size:
        raise ValueError(f"expected at most {values.size} clusters (distinct values), got {k}")
    chosen = rng.choice(values.size, size=k, replace=False, p=counts / counts.sum())
    return np.sort(values[chosen].astype(np.float64))


def kmeanspp_init(xs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: the first centroid uniformly from the data, each next one with probability ∝ D².

    D(x) is the distance from ``x`` to the nearest centroid chosen so far. In 1-D with sorted data the
    centroids cut the data into contiguous gaps, and a new centroid only changes D for the points of
    the gap it falls in, so each step samples a gap by its total D², then a point inside it, and
    recomputes just that gap: about ``n log k`` work instead of the textbook ``n k``. Hand-written
    because no library offers this 1-D shortcut (scikit-learn's version is the ``n k`` one).
    """
    n_distinct = _distinct(xs)[0].size
    if k > n_distinct:
        raise ValueError(f"expected at most {n_distinct} clusters (distinct values), got {k}")
    x = xs.astype(np.float64, copy=False)
    first = int(rng.integers(x.size))
    centroids = [x[first]]
    # Each gap: data index range [start, stop) bounded by centroids `left` and `right` (+-inf at ends).
    starts, stops = [0, first + 1], [first, x.size]
    lefts, rights = [-np.inf, x[first]], [x[first], np.inf]
    weights = [_gap_weight(x, 0, first, -np.inf, x[first]), _gap_weight(x, first + 1, x.size, x[first], np.inf)]
    for _ in range(k - 1):
        cum = np.cumsum(weights)
        g = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(weights) - 1)
        lo, hi, a, b = starts[g], stops[g], lefts[g], rights[g]
        seg = x[lo:hi]
        d2 = np.minimum((seg - a) ** 2, (seg - b) ** 2)
        seg_cum = np.cumsum(d2)
        j = lo + min(int(np.searchsorted(seg_cum, rng.random() * seg_cum[-1], side="right")), seg.size - 1)
        c = x[j]
        centroids.append(c)
        starts[g], stops[g], rights[g], weights[g] = lo, j, c, _gap_weight(x, lo, j, a, c)
        starts.append(j + 1)
        stops.append(hi)
        lefts.append(c)
        rights.append(b)
        weights.append(_gap_weight(x, j + 1, hi, c, b))
    return np.sort(np.asarray(centroids, dtype=np.float64))


def init_centroids(x: np.ndarray, n_clusters: int, method: str | CentroidInit = "linear", seed: Seed = 0) -> np.ndarray:
    """Initial centroids (float64, ascending) of 1-D data ``x`` by ``method``, seeded by ``seed``."""
    xs = np.sort(np.asarray(x).ravel())
    if xs.size == 0:
        raise ValueError("expected non-empty data, got an empty array")
    if not 1 <= n_clusters:
        raise ValueError(f"expected n_clusters >= 1, got {n_clusters}")
    return initializer(method)(xs, n_clusters, np.random.default_rng(seed))


def initializer(method: str | CentroidInit) -> Callable[[np.ndarray, int, np.random.Generator], np.ndarray]:
    """The function ``(sorted_data, k, rng) -> centroids`` implementing ``method``."""
    chosen = CentroidInit.parse(method, "init")
    table: dict[CentroidInit, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
        CentroidInit.LINEAR: lambda xs, k, rng: linear_init(xs, k),
        CentroidInit.DENSITY: lambda xs, k, rng: density_init(xs, k),
        CentroidInit.RANDOM: forgy_init,
        CentroidInit.KMEANS_PP: kmeanspp_init,
        CentroidInit.OPTIMAL: lambda xs, k, rng: optimal_init(xs, k),
    }
    return table[chosen]


def _distinct(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of sorted ``xs`` and their counts, in O(n) (no second sort)."""
    starts = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1])))
    counts = np.diff(np.append(starts, xs.size))
    return xs[starts], counts


def _gap_weight(x: np.ndarray, lo: int, hi: int, a: float, b: float) -> float:
    """Sum over ``x[lo:hi]`` of the squared distance to the nearer of ``a`` and ``b``."""
    if hi <= lo:
        return 0.0
    seg = x[lo:hi]
    return float(np.minimum((seg - a) ** 2, (seg - b) ** 2).sum())
