"""Compression ratio against test error on the paper's LeNets: our real files beside the published points.

Every point of ours is a committed ``.dcz`` whose ratio comes from its bytes on disk and whose error comes
from the full 10,000-image MNIST test set: the rungs of both ablation ladders (experiments/auto_ablation.py,
``--ladder paper`` with the old references and ``--ladder frontier`` with references trained on 55,000
images). The published points are numbers as their papers report them, none from a file: Deep Compression
(Han et al. 2016, Table 1), soft weight-sharing (Ullrich et al. 2017) and Bayesian compression (Louizos
et al. 2017), the latter two computed with a bit-count formula. The dashed line is the paper's reference
error (the dense Caffe models'); points left of it are at least as accurate as the paper's starting point.
A ``*`` marks a frontier option measured but not kept in the config.

Run: ``python experiments/fig_frontier.py`` (reads experiments/results/ablation_*.json, writes
experiments/results/frontier.png and frontier.json).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import RESULTS, write_json  # noqa: E402

#: Published (error %, ratio) points; "formula" marks ratios computed from a bit count rather than a file.
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "lenet300": [
        {"method": "Deep Compression (paper)", "error": 1.58, "ratio": 40, "formula": False},
        {"method": "soft weight-sharing", "error": 1.94, "ratio": 64, "formula": True},
    ],
    "lenet5": [
        {"method": "Deep Compression (paper)", "error": 0.74, "ratio": 39, "formula": False},
        {"method": "soft weight-sharing", "error": 0.97, "ratio": 162, "formula": True},
        {"method": "Bayesian compression (BC-GHS)", "error": 1.0, "ratio": 771, "formula": True},
    ],
}
REFERENCE_ERROR = {"lenet300": 1.64, "lenet5": 0.80}
TARGETS = {"lenet300": 200, "lenet5": 300}
"""Issue 17's ratio targets at or below the paper's reference error."""
TITLES = {"lenet300": "LeNet-300-100 / MNIST", "lenet5": "LeNet-5 / MNIST"}


def our_points(results: Path, model: str) -> list[dict[str, Any]]:
    """Every ladder rung of ``model`` on MNIST found in ``results``: ladder, variant, error %, ratio, bytes."""
    points = []
    for ladder, name in (("paper", f"ablation_{model}_mnist.json"), ("frontier", f"ablation_{model}_mnist_frontier.json")):
        path = results / name
        if not path.is_file():
            continue
        for row in json.loads(path.read_text())["variants"]:
            points.append({"ladder": ladder, "variant": row["variant"], "error": 100 * row["error"], "ratio": row["ratio"],
                           "file_bytes": row["file_bytes"]})
    return points


def plot(points: dict[str, list[dict[str, Any]]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    for ax, model in zip(axes, ("lenet300", "lenet5")):
        for ladder, marker, color in (("paper", "o", "tab:blue"), ("frontier", "*", "tab:red")):
            rows = [p for p in points[model] if p["ladder"] == ladder]
            if rows:
                label = "ours, real files: " + ("old references" if ladder == "paper" else "55k references, frontier")
                ax.scatter([p["error"] for p in rows], [p["ratio"] for p in rows], marker=marker, s=90 if marker == "*" else 40,
                           color=color, label=label, zorder=3)
                for p in rows:
                    ax.annotate(p["variant"].replace(" (not kept)", "*"), (p["error"], p["ratio"]), fontsize=6, xytext=(4, 2),
                                textcoords="offset points")
        for p in PUBLISHED[model]:
            label = p["method"] + (" (formula)" if p["formula"] else " (reported)")
            ax.scatter([p["error"]], [p["ratio"]], marker="s" if p["formula"] else "D", facecolors="none", edgecolors="k", s=60)
            ax.annotate(label, (p["error"], p["ratio"]), fontsize=7, xytext=(4, -10), textcoords="offset points")
        ax.axvline(REFERENCE_ERROR[model], color="gray", ls="--", lw=1, label="paper's reference error")
        ax.axhline(TARGETS[model], color="tab:green", ls=":", lw=1, label=f"target {TARGETS[model]}x")
        ax.set_yscale("log")
        ax.set_xlabel("test error (%)")
        ax.set_ylabel("compression ratio (dense fp32 bytes / file bytes)")
        ax.set_title(TITLES[model])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the ablation JSONs are")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    points = {model: our_points(args.results, model) for model in ("lenet300", "lenet5")}
    plot(points, args.out / "frontier.png")
    write_json(args.out / "frontier.json", {"ours": points, "published": PUBLISHED, "reference_error": REFERENCE_ERROR}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
