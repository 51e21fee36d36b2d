"""1-D k-means and centroid initialisations (Deep Compression section 3.1)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans

from deepcompress.quantize import KMeans1D, init_centroids
from deepcompress.errors import ConfigError


def _distributions(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(2 * n)
    return {
        "normal": rng.standard_normal(n),
        "laplace": rng.laplace(size=n),
        "uniform": rng.uniform(-1, 1, n),
        "pruned": g[np.abs(g) > 0.8][:n],
        "bimodal": np.concatenate([rng.normal(-2, 0.3, n // 2), rng.normal(1, 1, n - n // 2)]),
    }


def _inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    d = x.astype(np.float64)[:, None] - np.asarray(centroids, np.float64).ravel()[None, :]
    return float((d**2).min(axis=1).sum())


def _optimal_inertia(x: np.ndarray, k: int) -> float:
    """Exact optimum of 1-D k-means by dynamic programming over contiguous runs of sorted data."""
    xs = np.sort(x.astype(np.float64))
    n = xs.size
    p1 = np.concatenate(([0.0], np.cumsum(xs)))
    p2 = np.concatenate(([0.0], np.cumsum(xs**2)))

    def cost(i: int, j: int) -> float:  # run xs[i:j]
        s = p1[j] - p1[i]
        return p2[j] - p2[i] - s * s / (j - i)

    best = [cost(0, j) if j else 0.0 for j in range(n + 1)]
    for _ in range(1, k):
        best = [0.0] + [min(best[i] + cost(i, j) for i in range(0, j)) for j in range(1, n + 1)]
    return best[n]


@pytest.mark.parametrize("name", ["normal", "laplace", "uniform", "pruned", "bimodal"])
@pytest.mark.parametrize("init", ["linear", "density", "random", "kmeans++"])
def test_lloyd_matches_sklearn_from_the_same_start(name: str, init: str) -> None:
    x = _distributions(3000)[name].astype(np.float32)
    start = init_centroids(x, 8, init, seed=3)
    ours = KMeans1D(8, init=init, max_iter=1000, seed=3).fit(x)
    ref = KMeans(8, init=start[:, None], n_init=1, max_iter=1000, tol=0.0, algorithm="lloyd").fit(x[:, None])
    assert ours.converged_
    if name == "pruned":  # empty clusters in the pruned gap: both re-seed them, each its own way
        assert ours.inertia_ <= _inertia(x, ref.cluster_centers_) * (1 + 1e-5)
    else:
        assert ours.inertia_ == pytest.approx(_inertia(x, ref.cluster_centers_), rel=1e-5)
    assert ours.inertia_ == pytest.approx(_inertia(x, ours.centroids_), rel=1e-9)


@pytest.mark.parametrize("name", ["normal", "laplace", "uniform", "pruned", "bimodal"])
def test_result_is_a_lloyd_fixpoint_with_exact_nearest_labels(name: str) -> None:
    x = _distributions(5000)[name].astype(np.float32)
    km = KMeans1D(16).fit(x)
    c = km.centroids_.astype(np.float64)
    assert km.centroids_.dtype == np.float32 and np.all(np.diff(c) > 0)
    dist = np.abs(x.astype(np.float64)[:, None] - c[None, :])
    assert np.array_equal(dist[np.arange(x.size), km.labels_], dist.min(axis=1))
    means = np.array([x[km.labels_ == j].astype(np.float64).mean() for j in range(km.n_clusters_)])
    np.testing.assert_allclose(c, means, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_well_separated_clusters_reach_the_dp_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(m, 0.1, 10) for m in (-3.0, 0.0, 2.0, 5.0)]).astype(np.float32)
    for init in ("linear", "density", "kmeans++"):
        km = KMeans1D(4, init=init, seed=seed).fit(x)
        assert km.inertia_ == pytest.approx(_optimal_inertia(x, 4), rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_never_below_the_dp_optimum(seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(40).astype(np.float32)
    for init in ("linear", "density", "random", "kmeans++"):
        km = KMeans1D(3, init=init, seed=seed).fit(x)
        assert km.inertia_ >= _optimal_inertia(x, 3) * (1 - 1e-9)


def test_objective_against_sklearn_best_of_ten_on_gaussian_data() -> None:
    # Lloyd from the paper's linear init reaches a local optimum; on smooth unimodal data with few
    # clusters it matches scikit-learn's best of ten k-means++ runs (see the report for skewed data).
    x = _distributions(2000)["normal"].astype(np.float32)
    ref = KMeans(4, n_init=10, random_state=0).fit(x[:, None])
    assert KMeans1D(4).fit(x).inertia_ <= _inertia(x, ref.cluster_centers_) * (1 + 1e-6)


def test_linear_init_is_evenly_spaced_over_min_max() -> None:
    x = np.random.default_rng(0).uniform(-2, 3, 1000)
    c = init_centroids(x, 5, "linear")
    np.testing.assert_allclose(c, np.linspace(x.min(), x.max(), 5))


def test_density_init_takes_cdf_quantiles() -> None:
    x = np.arange(1000, dtype=np.float32)[::-1]
    np.testing.assert_array_equal(init_centroids(x, 4, "density"), [124, 374, 624, 874])


def test_random_and_kmeanspp_pick_distinct_data_points_reproducibly() -> None:
    x = np.repeat(np.arange(20, dtype=np.float32), 5)
    for init in ("random", "kmeans++"):
        c = init_centroids(x, 20, init, seed=7)
        np.testing.assert_array_equal(c, np.arange(20))  # all 20 distinct values, none twice
        c = init_centroids(x, 6, init, seed=7)
        assert np.unique(c).size == 6 and np.isin(c, x).all()
        np.testing.assert_array_equal(c, init_centroids(x, 6, init, seed=7))


def test_deterministic_for_a_fixed_seed() -> None:
    x = _distributions(4000)["laplace"].astype(np.float32)
    for init in ("random", "kmeans++"):
        a, b = KMeans1D(32, init=init, seed=5).fit(x), KMeans1D(32, init=init, seed=5).fit(x)
        np.testing.assert_array_equal(a.centroids_, b.centroids_)
        np.testing.assert_array_equal(a.labels_, b.labels_)


def test_fewer_distinct_values_than_clusters_uses_fewer_clusters() -> None:
    x = np.array([0.5, -1.0, 0.5, 2.0, -1.0], dtype=np.float32)
    km = KMeans1D(256).fit(x)
    assert km.n_clusters_ == 3
    np.testing.assert_array_equal(km.centroids_, [-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(km.centroids_[km.labels_], x)
    assert km.inertia_ == 0.0


def test_empty_clusters_are_reseeded() -> None:
    # Linear init puts most centroids in the empty middle of two far-apart groups.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-10, 1, 500), rng.normal(10, 1, 500)]).astype(np.float32)
    km = KMeans1D(16).fit(x)
    assert km.n_clusters_ == 16 and np.bincount(km.labels_, minlength=16).min() > 0


def test_large_input_labels_match_searchsorted() -> None:
    x = np.random.default_rng(1).standard_t(3, 200_000).astype(np.float32)
    km = KMeans1D(256, max_iter=20).fit(x)
    c = km.centroids_.astype(np.float64)
    mids = (c[:-1] + c[1:]) / 2
    np.testing.assert_array_equal(km.labels_, np.searchsorted(mids, x.astype(np.float64), side="left"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_clusters": 0}, "expected n_clusters to be an integer >= 1, got 0"),
        ({"n_clusters": 4, "max_iter": 0}, "expected max_iter to be an integer >= 1, got 0"),
        ({"n_clusters": 4, "tol": -1.0}, "expected tol to be a finite number >= 0, got -1.0"),
    ],
)
def test_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KMeans1D(**kwargs)


def test_unknown_init_lists_the_five() -> None:
    with pytest.raises(ConfigError, match=r"init: expected one of \['linear', 'density', 'random', 'kmeans\+\+', 'optimal'\], got 'forgy'"):
        KMeans1D(4, init="forgy")


def test_bad_data() -> None:
    with pytest.raises(ValueError, match="expected at least one value"):
        KMeans1D(2).fit(np.array([]))
    with pytest.raises(ValueError, match="expected finite values"):
        KMeans1D(2).fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="expected real numbers"):
        KMeans1D(2).fit(np.array(["a", "b"]))
