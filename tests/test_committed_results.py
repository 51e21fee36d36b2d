"""The committed compressed networks decode to the networks they were written from.

At write time the pipeline measured the quantized model's test accuracy in memory and stored it in the
file's metadata; decoding the committed file must reproduce that accuracy exactly on the full MNIST
test set, with no more distinct weight values per layer than its codebook holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import deepcompress as dc
from deepcompress.data import load_split

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


@pytest.mark.parametrize("name, paper_error", [("lenet300_mnist", 0.0164), ("lenet5_mnist", 0.0080)])
def test_committed_file_reproduces_its_recorded_accuracy(name: str, paper_error: float) -> None:
    path = RESULTS / f"{name}.dcz"
    compressed = dc.load_compressed(path)
    model = dc.to_dense_module(compressed)
    result = dc.evaluate(model, load_split("mnist", "test").tensors())
    assert result["n"] == 10_000
    assert result["accuracy"] == compressed.metadata["test_accuracy"]
    assert result["error"] <= paper_error
    state = model.state_dict()
    for layer in compressed.layers:
        weight = state[f"{layer.name}.weight"].numpy()
        assert np.count_nonzero(weight) == layer.nnz
        assert len(np.unique(weight[weight != 0])) <= 2**layer.weight_bits
    assert dc.inspect_file(path)["ratio"] >= 100


@pytest.mark.parametrize("name", ["resnet18_fashion", "resnet18_fashion_s98", "mobilenet_v3_small_fashion"])
def test_committed_user_network_reproduces_its_recorded_accuracy(name: str) -> None:
    """A user's network (a model file under examples/, which the file's record names relative to itself)."""
    from deepcompress.datasets import resolve_dataset

    path = RESULTS / f"{name}.dcz"
    compressed = dc.load_compressed(path)
    model = dc.load(path, trust_code=True)
    _, test = resolve_dataset("fashion", channels=3)
    result = dc.evaluate(model, test)
    assert result["n"] == 10_000
    # Exact on the machine that wrote it; oneDNN picks its convolution kernels by CPU, and a different
    # summation order can flip a borderline image on another machine type: at most 2 of 10,000 here.
    assert abs(result["accuracy"] - compressed.metadata["test_accuracy"]) <= 2e-4
    report = json.loads(path.with_suffix(".json").read_text())
    assert report["report"]["file_bytes"] == path.stat().st_size
    assert dc.inspect_file(path)["ratio"] == pytest.approx(report["report"]["ratio"])
