"""Globally optimal 1-D k-means by dynamic programming (an ``init = "optimal"`` for section 3.1).

Deep Compression clusters each layer's surviving weights with Lloyd's k-means (section 3.1), which
stops at a local optimum that depends on the initialisation (Fig. 4). In one dimension the global
optimum is computable: an optimal clustering splits the sorted data into ``k`` contiguous runs, so

    D[j][i] = min over l <= i of  D[j-1][l-1] + cost(l, i)

(``cost`` = squared error of the run ``l..i`` about its mean, from prefix sums in O(1)) gives the
optimum in ``D[k][n-1]`` (Bellman 1973; Wu 1991; Wang & Song's Ckmeans.1d.dp 2011). The position
``opt[j][i]`` of the best ``l`` never decreases with ``i`` (the cost obeys the quadrangle
inequality, Grønlund et al. 2017), so each row is filled by divide and conquer: solve the middle
``i``, then the left half only looks at ``l <= opt`` and the right half at ``l >= opt``, which is
``O(n log n)`` per row, ``O(k n log n)`` in all.

Layers hold millions of weights, so the DP runs on a fine histogram of the values
(:data:`DEFAULT_BINS` equal-width bins, each represented by the mean of its members and weighted by
their count): the clustering is exactly optimal for the binned data, and exact for the raw data
whenever it has at most that many distinct values. Lloyd's iterations then refine it on the raw
data (:class:`~deepcompress.quantize.kmeans.KMeans1D`), which can only lower the error.

Hand-written because no maintained Python library does weighted 1-D optimal k-means (scikit-learn
has only Lloyd / Elkan; Ckmeans.1d.dp is an R package). The rows are computed by numba when it is
installed (:mod:`deepcompress.jit`) and otherwise by a vectorised numpy version that processes all
sub-problems of one divide-and-conquer level at once; the two give the same partition.
"""

from __future__ import annotations

import numpy as np

from deepcompress.jit import HAVE_NUMBA, maybe_jit

DEFAULT_BINS = 1 << 16
"""Histogram bins the DP runs on when the data has more distinct values (the issue 17 measurement)."""

MAX_CELLS = 1 << 25
"""Cap on ``k * points`` of the DP's back-pointer table (int32, 128 MiB): beyond ``k = 512`` (9 bits)
the histogram gets ``MAX_CELLS // k`` bins instead of :data:`DEFAULT_BINS`."""

MIN_BINS_PER_CLUSTER = 32
"""Fewest histogram bins per cluster for the binned optimum to be worth having (measured: with 2 bins
per cluster, 12 bits, it ended above the linear start's error); below it the linear start is used."""


def optimal_init(xs: np.ndarray, k: int, bins: int = DEFAULT_BINS) -> np.ndarray:
    """``k`` float64 centroids (ascending) of sorted data ``xs``, optimal for its ``bins``-bin histogram.

    With at most ``bins`` distinct values (and ``k * bins <= MAX_CELLS``) the result is the exact
    optimum of the data. Where the memory cap leaves fewer than :data:`MIN_BINS_PER_CLUSTER` bins per
    cluster (``k > 1024``, unless the data has few distinct values) the paper's linear start is
    returned instead. When the histogram has fewer non-empty bins than ``k``, the last centroid is
    repeated to make ``k``; Lloyd re-seeds such duplicates as it does empty clusters.
    """
    if k < 1:
        raise ValueError(f"expected k >= 1, got {k}")
    bins = max(2, min(bins, MAX_CELLS // k))
    n_distinct = int(np.count_nonzero(xs[1:] != xs[:-1])) + 1
    if n_distinct > bins and bins < MIN_BINS_PER_CLUSTER * k:
        return np.linspace(float(xs[0]), float(xs[-1]), k)
    values, weights = weighted_histogram(xs, bins)
    centroids = optimal_centroids(values, weights, min(k, values.size))
    if centroids.size < k:
        centroids = np.concatenate((centroids, np.full(k - centroids.size, centroids[-1])))
    return centroids


def weighted_histogram(xs: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted data as ``(values, counts)``: its distinct values when there are at most ``bins`` of them,
    else the mean and member count of each non-empty one of ``bins`` equal-width bins over ``[min, max]``.

    A bin's mean (not its centre) keeps every cluster of whole bins at the same mean and squared-error
    ranking as its members, up to the within-bin scatter, which is the same for every clustering.
    """
    x = np.asarray(xs, dtype=np.float64)
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
    if starts.size <= bins:
        return x[starts], np.diff(np.append(starts, x.size)).astype(np.float64)
    lo, hi = x[0], x[-1]
    # Bin of each value; monotone in the value, so the sorted data is cut into runs of equal bins.
    which = np.minimum(((x - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    cuts = np.flatnonzero(np.concatenate(([True], which[1:] != which[:-1])))
    counts = np.diff(np.append(cuts, x.size)).astype(np.float64)
    sums = np.add.reduceat(x, cuts)
    return sums / counts, counts


def optimal_centroids(values: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` cluster means of the optimal weighted k-means of sorted distinct ``values`` (``k <= len``)."""
    starts = optimal_partition(values, weights, k)
    sums = np.add.reduceat(values * weights, starts)
    return sums / np.add.reduceat(weights, starts)


def optimal_partition(values: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Start index of each of the ``k`` runs of the optimal weighted k-means of sorted ``values``.

    Minimises ``sum_i weights[i] * (values[i] - mean of its run)**2`` over all cuts of ``values``
    into ``k`` non-empty contiguous runs. Requires ``1 <= k <= len(values)`` and positive weights.
    """
    m = int(values.size)
    if not 1 <= k <= m:
        raise ValueError(f"expected 1 <= k <= {m} (the number of values), got {k}")
    if k == m:
        return np.arange(m, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    # Centred values keep the prefix sums of squares small, so cost() loses little to cancellation.
    v = np.asarray(values, dtype=np.float64)
    v = v - float(np.dot(v, w) / w.sum())
    pw, ps, pq = (np.concatenate(([0.0], np.cumsum(a))) for a in (w, w * v, w * v * v))
    back = np.zeros((k, m), dtype=np.int32)
    best = _run_cost(pw, ps, pq, np.zeros(m, dtype=np.int64), np.arange(m, dtype=np.int64))
    row = _row_kernel if HAVE_NUMBA else _row_numpy
    for j in range(1, k):
        # Previous row shifted: prev[l] = optimum of values[0:l] in j runs (defined for l >= j).
        prev = np.concatenate(([np.inf], best))
        last = m - k + j  # the k - 1 - j later runs need a value each
        best = np.full(m, np.inf)
        row(prev, pw, ps, pq, j, last, best, back[j])
    starts = np.empty(k, dtype=np.int64)
    i = m - 1
    for j in range(k - 1, -1, -1):
        starts[j] = back[j, i]
        i = starts[j] - 1
    return starts


def _run_cost(pw: np.ndarray, ps: np.ndarray, pq: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Weighted squared error of the runs ``lo..hi`` (inclusive) about their means, clamped at 0."""
    s = ps[hi + 1] - ps[lo]
    return np.maximum(pq[hi + 1] - pq[lo] - s * s / (pw[hi + 1] - pw[lo]), 0.0)


def _row_numpy(
    prev: np.ndarray, pw: np.ndarray, ps: np.ndarray, pq: np.ndarray, j: int, last: int, best: np.ndarray, back: np.ndarray
) -> None:
    """Fill ``best[i]``, ``back[i]`` for ``i = j..last``: the last run starts at ``l`` in ``j..i``.

    Divide and conquer one level at a time: every pending task ``(lo, hi, opt_lo, opt_hi)`` solves its
    middle ``i`` by scanning ``l`` in ``opt_lo..min(i, opt_hi)``; all scans of a level are one flat
    array, whose per-task minimum is a ``reduceat``. Ties take the smallest ``l``, which keeps the
    optimal positions monotone.
    """
    lo = np.array([j], dtype=np.int64)
    hi = np.array([last], dtype=np.int64)
    opt_lo = np.array([j], dtype=np.int64)
    opt_hi = np.array([last], dtype=np.int64)
    while lo.size:
        mid = (lo + hi) // 2
        lengths = np.minimum(mid, opt_hi) - opt_lo + 1
        offsets = np.cumsum(lengths) - lengths
        task = np.repeat(np.arange(lo.size), lengths)
        cand = opt_lo[task] + np.arange(task.size) - offsets[task]
        at = mid[task]
        total = prev[cand] + _run_cost(pw, ps, pq, cand, at)
        low = np.minimum.reduceat(total, offsets)
        hit = np.flatnonzero(total <= low[task])
        first = hit[np.concatenate(([True], task[hit][1:] != task[hit][:-1]))]
        opt = cand[first]
        best[mid] = low
        back[mid] = opt
        left = mid > lo
        right = mid < hi
        lo, hi, opt_lo, opt_hi = (
            np.concatenate((lo[left], mid[right] + 1)),
            np.concatenate((mid[left] - 1, hi[right])),
            np.concatenate((opt_lo[left], opt[right])),
            np.concatenate((opt[left], opt_hi[right])),
        )


@maybe_jit
def _row_kernel(
    prev: np.ndarray, pw: np.ndarray, ps: np.ndarray, pq: np.ndarray, j: int, last: int, best: np.ndarray, back: np.ndarray
) -> None:
    """:func:`_row_numpy` as scalar loops with an explicit stack (compiled by numba)."""
    stack = np.empty((64, 4), dtype=np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = j, last, j, last
    top = 1
    while top > 0:
        top -= 1
        lo, hi, opt_lo, opt_hi = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
        mid = (lo + hi) // 2
        low = np.inf
        opt = opt_lo
        for cand in range(opt_lo, min(mid, opt_hi) + 1):
            s = ps[mid + 1] - ps[cand]
            cost = pq[mid + 1] - pq[cand] - s * s / (pw[mid + 1] - pw[cand])
            total = prev[cand] + max(cost, 0.0)
            if total < low:
                low = total
                opt = cand
        best[mid] = low
        back[mid] = opt
        if mid < hi:
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = mid + 1, hi, opt, opt_hi
            top += 1
        if mid > lo:
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = lo, mid - 1, opt_lo, opt
            top += 1

