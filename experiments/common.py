"""Shared plumbing of the experiment scripts: arguments, data, reference models, JSON + PNG output.

Every script takes ``--tiny`` (a few hundred images, fewer sweep points) so the test suite can run it
end to end in seconds, and ``--out`` (default: experiments/results/). Results are JSON with the wall
time and the command; figures are PNG (matplotlib, Agg backend).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from deepcompress.atomic import atomic_write_text  # noqa: E402
from deepcompress.checkpoint import load_checkpoint  # noqa: E402
from deepcompress.data import load_split  # noqa: E402
from deepcompress.train import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="a few hundred images and short sweeps (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON and PNG results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def reference(name: str, dataset: str = "mnist") -> Any:
    """The committed reference model ``experiments/results/<name>_<dataset>_ref.safetensors``."""
    return load_checkpoint(RESULTS / f"{name}_{dataset}_ref.safetensors")[0]


def test_data(dataset: str, tiny: bool) -> Any:
    return load_split(dataset, "test").tensors(300 if tiny else None)


def train_data(dataset: str, tiny: bool) -> Any:
    return load_split(dataset, "train").tensors(500 if tiny else None)


def accuracy_on(data: Any) -> Any:
    return lambda model: evaluate(model, data)["accuracy"]


def prune_and_retrain(model: Any, sparsity: dict[str, float], train: Any, rounds: int, epochs: int, lr: float) -> Any:
    """Iteratively prune ``model`` in place to per-layer ``sparsity``, retraining ``epochs`` per round at ``lr``
    with pruned weights held at zero (Han 2015, section 3.3); returns the model."""
    from deepcompress.prune import PruneConfig, iterative_prune_, keep_pruned_zero
    from deepcompress.train import TrainConfig, fit

    def retrain(m: Any, round_index: int) -> None:
        fit(m, train, TrainConfig(epochs=epochs, seed=round_index), lr=lr,
            on_optimizer=lambda opt: keep_pruned_zero(opt, m), progress=False)

    cfg = PruneConfig(method="sparsity", sparsity=sparsity, rounds=rounds, epochs_per_round=epochs)
    iterative_prune_(model, cfg, retrain=retrain, progress=False)
    return model


def write_json(path: Path, result: dict[str, Any], started: float) -> None:
    result = {**result, "wall_seconds": round(time.perf_counter() - started, 1), "command": " ".join(["python", *sys.argv])}
    atomic_write_text(path, json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {path}")
