"""Exact 1-D k-means (Lloyd's algorithm) for weight sharing (Deep Compression section 3.1).

In one dimension every k-means cluster is a contiguous run of the sorted data, delimited by the
midpoints between adjacent (sorted) centroids. So the data is sorted once, and each Lloyd step is a
binary search of the ``k - 1`` midpoints in the sorted data (``O(k log n)``) plus cluster means from
prefix sums (``O(k)``): iterations cost nothing next to the sort. Hand-written because the general
k-means of scikit-learn costs ``O(n k)`` per iteration and cannot use the 1-D order.

Numerics: the data are float32 (network weights; float64 input is rounded to float32); centroids are
float64 while iterating and rounded to float32 at the end, and the final labels are the exact nearest
float32 centroid of each point (ties go to the lower centroid), so ``centroids_[labels_]`` is exactly
what a weight-shared layer computes.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

from deepcompress.quantize.config import CentroidInit
from deepcompress.quantize.init import Seed, initializer

# Buckets per midpoint of the lookup table used to label the data (see _nearest); more buckets mean
# fewer correction passes but a larger table. The table is capped so it stays in cache.
_BUCKETS_PER_MIDPOINT = 64
_MAX_BUCKETS = 1 << 18
_MAX_PASSES = 8


class KMeans1D:
    """k-means of 1-D data, exact Lloyd iterations on the sorted data.

    Args:
        n_clusters: the wanted number of clusters ``k`` (>= 1).
        init: centroid initialisation, one of ``linear`` (default), ``density``, ``random``, ``kmeans++``,
            ``optimal`` (dynamic programming, see :mod:`deepcompress.quantize.optimal`).
        max_iter: most Lloyd iterations (>= 1).
        tol: stop when the squared centroid shift summed over clusters is at most ``tol * var(x)``;
            ``0`` (default) iterates until the partition no longer changes (exact convergence).
        seed: seed of the ``random`` and ``kmeans++`` initialisations.

    Empty clusters are re-seeded deterministically by splitting the cluster with the largest squared
    error in two at its mean (see :func:`_reseed`). A cluster still empty when ``max_iter`` runs out is dropped. Data with fewer distinct values
    than ``k`` get one cluster per distinct value. Either way ``n_clusters_`` reports how many
    clusters were actually used.

    Attributes (after :meth:`fit`):
        centroids_: float32 centroids, strictly ascending, ``n_clusters_`` of them.
        labels_: int32 index into ``centroids_`` of every input value, in input order.
        inertia_: sum of squared distances of the data to their centroid (float64).
        n_iter_: Lloyd iterations run.
        n_clusters_: number of clusters used (``<= n_clusters``).
        converged_: whether the stopping rule was met before ``max_iter``.
    """

    def __init__(
        self,
        n_clusters: int,
        init: str | CentroidInit = "linear",
        max_iter: int = 300,
        tol: float = 0.0,
        seed: Seed = 0,
    ) -> None:
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
            raise ValueError(f"expected n_clusters to be an integer >= 1, got {n_clusters!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"expected max_iter to be an integer >= 1, got {max_iter!r}")
        if not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol >= 0):
            raise ValueError(f"expected tol to be a finite number >= 0, got {tol!r}")
        self.n_clusters = int(n_clusters)
        self.init = CentroidInit.parse(init, "init")
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.seed = seed

    def fit(self, x: np.ndarray | Sequence[float]) -> KMeans1D:
        """Cluster the values of ``x`` (any shape, flattened); returns ``self``."""
        data = _as_float32_vector(x)
        xs = np.sort(data)
        if not (np.isfinite(xs[0]) and np.isfinite(xs[-1])):  # the sort puts NaN last, -inf first
            raise ValueError("expected finite values, got NaN or infinity (after rounding to float32)")
        n_distinct = int(np.count_nonzero(xs[1:] != xs[:-1])) + 1
        k = min(self.n_clusters, n_distinct)
        rng = np.random.default_rng(self.seed)
        centroids = np.sort(initializer(self.init)(xs, k, rng))
        prefix = np.empty(xs.size + 1, dtype=np.float64)
        prefix[0] = 0.0
        np.cumsum(xs, dtype=np.float64, out=prefix[1:])
        threshold = self.tol * float(np.var(xs, dtype=np.float64)) if self.tol > 0 else 0.0

        prefix_sq: np.ndarray | None = None
        self.converged_ = False
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            self.n_iter_ += 1
            edges = _run_edges(xs, centroids)
            counts = np.diff(edges)
            empty = counts == 0
            means = (prefix[edges[1:]] - prefix[edges[:-1]]) / np.maximum(counts, 1)
            updated = np.where(empty, centroids, means)
            if empty.any():
                if prefix_sq is None:  # only needed to re-seed empty clusters, so built on demand
                    prefix_sq = np.empty_like(prefix)
                    prefix_sq[0] = 0.0
                    np.cumsum(np.square(xs, dtype=np.float64), out=prefix_sq[1:])
                updated = np.sort(_reseed(xs, prefix, prefix_sq, updated, edges, empty))
                centroids = updated
                continue
            shift = float(np.sum((updated - centroids) ** 2))
            centroids = updated
            if shift <= threshold:
                self.converged_ = True
                break
        self._finish(data, xs, centroids)
        return self

    def fit_predict(self, x: np.ndarray | Sequence[float]) -> np.ndarray:
        """:meth:`fit` and return ``labels_``."""
        return self.fit(x).labels_

    def _finish(self, data: np.ndarray, xs: np.ndarray, centroids: np.ndarray) -> None:
        """Round centroids to float32, drop empty or duplicate ones, label the data exactly."""
        c32 = np.unique(centroids.astype(np.float32))
        while True:
            counts = np.diff(_run_edges(xs, c32.astype(np.float64)))
            if counts.all():
                break
            c32 = c32[counts > 0]
        self.centroids_ = c32
        self.n_clusters_ = int(c32.size)
        self.labels_ = _nearest(data, _midpoints_floor32(c32.astype(np.float64)), float(xs[0]), float(xs[-1]))
        diff = xs.astype(np.float64) - np.repeat(c32.astype(np.float64), counts)
        self.inertia_ = float(diff @ diff)


def _as_float32_vector(x: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"expected real numbers, got an array of dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, rejected after the sort
        data = np.ascontiguousarray(arr, dtype=np.float32).ravel()
    if data.size == 0:
        raise ValueError("expected at least one value to cluster, got an empty array")
    return data


def _midpoints_floor32(centroids: np.ndarray) -> np.ndarray:
    """Midpoints of adjacent float64 centroids rounded *down* to float32.

    For a float32 value ``v`` and a float64 midpoint ``m``, ``v <= m`` exactly when
    ``v <= floor32(m)``, so comparisons against these float32 midpoints decide the nearest centroid
    exactly while searching float32 data without converting it.
    """
    mids = (centroids[:-1] + centroids[1:]) * 0.5
    mids32 = mids.astype(np.float32)
    above = mids32 > mids
    mids32[above] = np.nextafter(mids32[above], np.float32(-np.inf))
    return mids32


def _run_edges(xs: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Run boundaries ``[0, b_1, ..., b_{k-1}, n]`` of each centroid's cluster in sorted data ``xs``."""
    bounds = np.searchsorted(xs, _midpoints_floor32(centroids), side="right")
    return np.concatenate(([0], bounds, [xs.size]))


def _reseed(
    xs: np.ndarray, prefix: np.ndarray, prefix_sq: np.ndarray, centroids: np.ndarray, edges: np.ndarray, empty: np.ndarray
) -> np.ndarray:
    """Give each empty cluster's centroid half of the cluster with the largest squared error.

    Greedy bisection, one empty cluster at a time: the run (cluster) with the largest sum of squared
    errors is cut at its mean; its centroid becomes the lower part's mean and the empty centroid the
    upper part's. Both parts' errors come from prefix sums (``O(log n)`` each) and go back on a heap,
    so ``e`` empty clusters cost ``O(e (log k + log n))``; the cut that lowers the total error most
    is taken first (ties: lower cluster). scikit-learn instead moves empty clusters onto the points
    farthest from their centroids, which in 1-D puts them in the sparse tails where they help least.
    """

    def sse(lo: int, hi: int) -> float:
        if hi - lo < 2:
            return 0.0
        s1 = prefix[hi] - prefix[lo]
        return max(0.0, float(prefix_sq[hi] - prefix_sq[lo] - s1 * s1 / (hi - lo)))

    out = centroids.copy()
    full = np.flatnonzero(~empty)
    heap = [(-sse(int(edges[j]), int(edges[j + 1])), int(j), int(edges[j]), int(edges[j + 1])) for j in full]
    heapq.heapify(heap)
    for slot in np.flatnonzero(empty):
        neg_err, j, lo, hi = heapq.heappop(heap)
        if neg_err == 0.0:  # nothing left to split: the cluster stays empty for this step
            heapq.heappush(heap, (neg_err, j, lo, hi))
            continue
        mean = (prefix[hi] - prefix[lo]) / (hi - lo)
        cut = lo + int(np.searchsorted(xs[lo:hi], mean, side="right"))
        cut = min(max(cut, lo + 1), hi - 1)
        out[j] = (prefix[cut] - prefix[lo]) / (cut - lo)
        out[slot] = (prefix[hi] - prefix[cut]) / (hi - cut)
        heapq.heappush(heap, (-sse(lo, cut), j, lo, cut))
        heapq.heappush(heap, (-sse(cut, hi), int(slot), cut, hi))
    return out


def _nearest(x: np.ndarray, mids32: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``searchsorted(mids32, x, side="left")`` as int32, computed with a bucket table.

    numpy's searchsorted of millions of unsorted values is branchy and slow (about 60 ns a value
    here), so values are first mapped to one of ``B`` equal buckets over ``[lo, hi]`` by a monotone
    float32 formula; applying the *same* formula to the midpoints gives, per bucket, how many
    midpoints lie in earlier buckets (an exact lower bound of the label) and how many inside it, and
    at most that many vectorised ``x > mid[label]`` passes finish the count exactly.
    """
    m = mids32.size
    if m == 0:
        return np.zeros(x.size, dtype=np.int32)
    n_buckets = int(min(_MAX_BUCKETS, _BUCKETS_PER_MIDPOINT * m))
    lo32 = np.float32(lo)
    scale = np.float32(n_buckets / (hi - lo)) if hi > lo else np.float32(0)
    top = np.float32(n_buckets - 1)

    def bucket(v: np.ndarray) -> np.ndarray:
        t = np.subtract(v, lo32, dtype=np.float32)
        np.multiply(t, scale, out=t)
        np.clip(t, np.float32(0), top, out=t)
        return t.astype(np.int32)

    mid_buckets = bucket(mids32)
    passes = int(np.bincount(mid_buckets, minlength=n_buckets).max())
    if passes > _MAX_PASSES:
        return np.searchsorted(mids32, x, side="left").astype(np.int32)
    base = np.searchsorted(mid_buckets, np.arange(n_buckets, dtype=np.int32), side="left").astype(np.int32)
    labels = base[bucket(x)]
    sentinel = np.append(mids32, np.float32(np.inf))
    for _ in range(passes):
        labels += x > sentinel[labels]
    return labels
