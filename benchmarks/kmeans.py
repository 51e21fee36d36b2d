"""Benchmark: 1-D k-means of 4M weights into 256 clusters, ours vs scikit-learn (paper section 3).

Both run Lloyd's algorithm from the same linear-init centroids on the same float32 data in this
process. scikit-learn's Lloyd costs O(n k) per iteration (seconds here), so it is timed with a small
``--sk-iters`` budget and compared with ours at the same budget (same-iteration inertia); ours is also
timed with the project default of up to 300 iterations. Reported: median, min and max of the wall
times (interleaved repetitions after a warm-up) and both inertias, written to
benchmarks/results/kmeans.json with the machine and library versions.

    python benchmarks/kmeans.py            # full measurement
    python benchmarks/kmeans.py --quick    # 400k weights, few repetitions
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.cluster import KMeans

from deepcompress.atomic import atomic_write_text
from deepcompress.quantize import KMeans1D, init_centroids


def pruned_weights(n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 weights like a pruned fc layer: Laplace-ish, the small magnitudes removed."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(0.0, 0.02, 2 * n).astype(np.float32)
    w = w[np.abs(w) > 0.01]
    return np.ascontiguousarray(w[:n])


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances to the nearest centroid, computed the same way for both."""
    c = np.sort(np.asarray(centroids, dtype=np.float64).ravel())
    mids = (c[:-1] + c[1:]) / 2
    d = x.astype(np.float64) - c[np.searchsorted(mids, x.astype(np.float64))]
    return float(d @ d)


def machine() -> dict[str, object]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import threadpoolctl

    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "load_average_1m_at_start": os.getloadavg()[0],  # shared machine: other jobs slow every figure
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "threadpools": [
            {k: p[k] for k in ("user_api", "internal_api", "num_threads")} for p in threadpoolctl.threadpool_info()
        ],
    }


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "reps": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_000_000)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--sk-reps", type=int, default=3)
    parser.add_argument("--sk-iters", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "kmeans.json"))
    args = parser.parse_args()
    if args.quick:
        args.n, args.reps, args.sk_reps = 400_000, 3, 1

    x = pruned_weights(args.n)
    start = init_centroids(x, args.k, "linear")
    runs: dict[str, list[float]] = {"ours_default": [], "ours_budget": [], "sklearn_budget": []}
    results: dict[str, KMeans1D | KMeans] = {}

    def ours_default() -> None:
        results["ours_default"] = KMeans1D(args.k, init="linear", max_iter=300).fit(x)

    def ours_budget() -> None:
        results["ours_budget"] = KMeans1D(args.k, init="linear", max_iter=args.sk_iters).fit(x)

    def sk_budget() -> None:
        results["sklearn_budget"] = KMeans(
            args.k, init=start[:, None], n_init=1, max_iter=args.sk_iters, tol=0.0, algorithm="lloyd"
        ).fit(x[:, None])

    ours_default(), ours_budget()  # warm-up
    for rep in range(args.reps):
        for name, fn in (("ours_default", ours_default), ("ours_budget", ours_budget)):
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
        if rep < args.sk_reps:
            t0 = time.perf_counter()
            sk_budget()
            runs["sklearn_budget"].append(time.perf_counter() - t0)

    ours_d, ours_b, sk = results["ours_default"], results["ours_budget"], results["sklearn_budget"]
    report = {
        "benchmark": "1-D k-means, linear init, float32 data",
        "n": int(x.size),
        "k": args.k,
        "machine": machine(),
        "ours_default": {
            **summary(runs["ours_default"]),
            "max_iter": 300,
            "n_iter": ours_d.n_iter_,
            "converged": ours_d.converged_,
            "inertia": inertia(x, ours_d.centroids_),
        },
        "ours_budget": {**summary(runs["ours_budget"]), "max_iter": args.sk_iters, "inertia": inertia(x, ours_b.centroids_)},
        "sklearn_budget": {
            **summary(runs["sklearn_budget"]),
            "max_iter": args.sk_iters,
            "n_iter": int(sk.n_iter_),
            "inertia": inertia(x, sk.cluster_centers_),
        },
    }
    report["speedup_same_budget"] = report["sklearn_budget"]["median_s"] / report["ours_budget"]["median_s"]
    report["target_s"] = 0.5
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
