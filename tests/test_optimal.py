"""Optimal 1-D k-means by dynamic programming (``init = "optimal"``, deepcompress.quantize.optimal)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deepcompress.jit import HAVE_NUMBA
from deepcompress.quantize import CentroidInit, KMeans1D, QuantizeConfig, init_centroids
from deepcompress.quantize import optimal
from deepcompress.quantize.apply import layer_kmeans
from deepcompress.quantize.optimal import optimal_centroids, optimal_init, optimal_partition, weighted_histogram


def _sse(values: np.ndarray, weights: np.ndarray, starts: np.ndarray) -> float:
    ends = np.append(starts[1:], values.size)
    total = 0.0
    for a, b in zip(starts, ends):
        mean = np.average(values[a:b], weights=weights[a:b])
        total += float(np.sum(weights[a:b] * (values[a:b] - mean) ** 2))
    return total


def _brute_force(values: np.ndarray, weights: np.ndarray, k: int) -> float:
    """Smallest error over every cut of the sorted values into ``k`` non-empty contiguous runs."""
    m = values.size
    return min(_sse(values, weights, np.array((0,) + cuts)) for cuts in itertools.combinations(range(1, m), k - 1))


def _nearest_sse(x: np.ndarray, centroids: np.ndarray) -> float:
    d = x.astype(np.float64)[:, None] - np.asarray(centroids, np.float64)[None, :]
    return float((d**2).min(axis=1).sum())


@pytest.mark.parametrize("seed", range(40))
def test_partition_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.unique(np.round(rng.laplace(size=int(rng.integers(1, 11))), 3))
    weights = rng.integers(1, 6, values.size).astype(np.float64)
    for k in range(1, values.size + 1):
        starts = optimal_partition(values, weights, k)
        assert starts.size == k and starts[0] == 0 and np.all(np.diff(starts) > 0)
        assert _sse(values, weights, starts) == pytest.approx(_brute_force(values, weights, k), rel=1e-9, abs=1e-12)
        means = [np.average(values[a:b], weights=weights[a:b]) for a, b in zip(starts, np.append(starts[1:], values.size))]
        np.testing.assert_allclose(optimal_centroids(values, weights, k), means, rtol=1e-12)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_rows_match_the_numpy_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    values, weights = weighted_histogram(np.sort(rng.laplace(size=20000)), 3000)
    compiled = optimal_partition(values, weights, 13)
    monkeypatch.setattr(optimal, "HAVE_NUMBA", False)
    np.testing.assert_array_equal(optimal_partition(values, weights, 13), compiled)


def test_kernel_python_original_matches_the_numpy_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    values, weights = weighted_histogram(np.sort(rng.laplace(size=5000)), 300)
    monkeypatch.setattr(optimal, "HAVE_NUMBA", False)
    reference = optimal_partition(values, weights, 7)
    monkeypatch.setattr(optimal, "HAVE_NUMBA", True)
    monkeypatch.setattr(optimal, "_row_kernel", optimal._row_kernel.py_func)
    np.testing.assert_array_equal(optimal_partition(values, weights, 7), reference)


@pytest.mark.parametrize("dist", ["normal", "laplace", "pruned", "bimodal"])
@pytest.mark.parametrize("k", [2, 4, 8, 32])
def test_never_worse_than_linear_lloyd(dist: str, k: int) -> None:
    rng = np.random.default_rng(k)
    g = rng.standard_normal(40000)
    x = {
        "normal": g[:20000],
        "laplace": rng.laplace(scale=0.05, size=20000),
        "pruned": g[np.abs(g) > 0.9],
        "bimodal": np.concatenate([rng.normal(-2, 0.3, 5000), rng.normal(1, 1, 15000)]),
    }[dist].astype(np.float32)
    best = KMeans1D(k, init="optimal").fit(x)
    linear = KMeans1D(k, init="linear").fit(x)
    assert best.inertia_ <= linear.inertia_ * (1 + 1e-6)
    assert best.inertia_ == pytest.approx(_nearest_sse(x, best.centroids_), rel=1e-9)


def test_exact_on_data_with_few_distinct_values() -> None:
    rng = np.random.default_rng(5)
    x = np.sort(rng.choice(rng.laplace(size=9), size=5000)).astype(np.float32)
    values, counts = weighted_histogram(x, 16)
    assert values.size == np.unique(x).size and counts.sum() == x.size
    for k in (2, 3, 5):
        got = KMeans1D(k, init="optimal").fit(x).inertia_
        assert got == pytest.approx(_brute_force(values, counts, k), rel=1e-6)


def test_histogram_path_keeps_bin_means_and_counts() -> None:
    x = np.sort(np.random.default_rng(2).laplace(size=100000))
    values, counts = weighted_histogram(x, 1000)
    assert values.size <= 1000 and counts.sum() == x.size
    assert np.all(np.diff(values) > 0)
    assert float(np.dot(values, counts)) == pytest.approx(float(x.sum()), rel=1e-9, abs=1e-6)


def test_histogram_optimum_then_lloyd_is_at_most_the_binned_optimum() -> None:
    x = np.sort(np.random.default_rng(3).laplace(size=50000)).astype(np.float32)
    start = optimal_init(x, 8, bins=256)
    refined = KMeans1D(8, init="optimal").fit(x)
    assert refined.inertia_ <= _nearest_sse(x, start) * (1 + 1e-9)


def test_edge_cases() -> None:
    assert KMeans1D(4, init="optimal").fit(np.full(10, 0.5, np.float32)).centroids_.tolist() == [0.5]
    x = np.array([3.0, -1.0, 2.0, -1.0], np.float32)
    fitted = KMeans1D(8, init="optimal").fit(x)
    assert fitted.centroids_.tolist() == [-1.0, 2.0, 3.0] and fitted.inertia_ == 0.0
    one = KMeans1D(1, init="optimal").fit(x)
    assert one.centroids_[0] == pytest.approx(x.mean()) and one.n_iter_ == 1
    two = init_centroids(np.array([0.0, 0.1, 0.2, 5.0, 5.1]), 2, "optimal")
    np.testing.assert_allclose(two, [0.1, 5.05])


def test_too_few_bins_per_cluster_falls_back_to_the_linear_start() -> None:
    x = np.sort(np.random.default_rng(6).laplace(size=5000)).astype(np.float32)
    np.testing.assert_array_equal(optimal_init(x, 16, bins=100), np.linspace(float(x[0]), float(x[-1]), 16))
    assert optimal_init(x[:90], 16, bins=100).size == 16  # few distinct values: still exact
    assert _nearest_sse(x[:90], optimal_init(x[:90], 16, bins=100)) < _nearest_sse(x[:90], np.linspace(float(x[0]), float(x[89]), 16))


def test_more_clusters_than_nonempty_bins_are_padded_for_lloyd_to_reseed() -> None:
    x = np.sort(np.concatenate([np.zeros(1000), np.linspace(1, 1.0001, 300)])).astype(np.float32)
    assert weighted_histogram(x, 6 * 32)[0].size == 2  # 301 distinct values, two non-empty bins
    start = optimal_init(x, 6, bins=6 * 32)
    assert start.size == 6 and np.all(np.diff(start) >= 0) and np.unique(start).size < 6
    assert KMeans1D(6, init="optimal").fit(x).n_clusters_ == 6


def test_bad_k() -> None:
    with pytest.raises(ValueError, match=r"expected 1 <= k <= 3"):
        optimal_partition(np.array([1.0, 2.0, 3.0]), np.ones(3), 4)


def test_config_selects_it_for_layer_kmeans() -> None:
    cfg = QuantizeConfig(init="optimal")
    assert cfg.init is CentroidInit.OPTIMAL and cfg.to_dict()["init"] == "optimal"
    g = np.random.default_rng(9).standard_normal(30000).astype(np.float32)
    values = g[np.abs(g) > 1.0]
    best = layer_kmeans(values, 5, cfg, 0)
    linear = layer_kmeans(values, 5, QuantizeConfig(init="linear"), 0)
    assert best.inertia_ < linear.inertia_
