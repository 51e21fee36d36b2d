"""The scale benchmark's building blocks: exact chunked pruning, trained-like weights, direct decoding."""

from __future__ import annotations

import math
import os

import pytest
import torch

from deepcompress.bench.scale import (
    PAPER_SETTINGS,
    prune_survivors,
    run_scale_benchmark,
    trained_like_,
)
from deepcompress.compressed import CompressedModel
from deepcompress.decode import empty_model, to_dense_module
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.format import load_compressed
from deepcompress.prune.masks import sparsity_mask


def _reference(weight: torch.Tensor, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.nonzero(sparsity_mask(weight, sparsity).flatten()).flatten()
    return positions, weight.flatten()[positions]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.91, 0.999])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("chunk,sample", [(1 << 20, 1 << 16), (97, 5)])
def test_prune_survivors_equals_sparsity_mask(sparsity: float, ties: bool, chunk: int, sample: int) -> None:
    g = torch.Generator().manual_seed(int(1000 * sparsity) + ties)
    weight = torch.randn(60, 70, generator=g)
    if ties:  # few distinct magnitudes: the cut falls inside a run of equal values, earliest pruned first
        weight = torch.round(weight * 3) / 3
    positions, values = prune_survivors(weight, sparsity, chunk=chunk, sample=sample, seed=3)
    ref_positions, ref_values = _reference(weight, sparsity)
    assert torch.equal(positions, ref_positions)
    assert torch.equal(values, ref_values)


def test_prune_survivors_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"expected sparsity in \[0, 1\), got 1.0"):
        prune_survivors(torch.ones(4), 1.0)
    with pytest.raises(TypeError, match="expected a floating-point weight, got dtype torch.int64"):
        prune_survivors(torch.ones(4, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="weights contain NaN or inf"):
        prune_survivors(torch.tensor([1.0, float("nan"), 2.0]), 0.5)


def test_trained_like_weights_have_he_scale_laplace_statistics() -> None:
    model = trained_like_(empty_model("lenet300"), seed=1)
    w = model.fc1.weight.detach().double()
    std = math.sqrt(2.0 / 784)
    assert abs(float(w.std()) / std - 1) < 0.02 and abs(float(w.mean())) < 0.01 * std
    # a Laplace law has E|w| = b = std / sqrt(2) (a normal would give std * sqrt(2 / pi))
    assert abs(float(w.abs().mean()) / (std / math.sqrt(2)) - 1) < 0.02
    assert torch.isfinite(w).all() and torch.count_nonzero(model.fc1.bias) == 300


def test_quick_benchmark_reports_real_sizes_and_decodes_bit_identically(tmp_path) -> None:
    path = tmp_path / "quick.dcz"
    result = run_scale_benchmark("vgg16", quick=True, out_path=path)
    assert result["model"] == "lenet5" and result["stand_in_for"] == "vgg16"
    assert result["file_bytes"] == os.path.getsize(path)
    assert result["ratio"] == pytest.approx(result["dense_bytes"] / result["file_bytes"])
    assert result["dense_bytes"] == 4 * 431_080
    settings = PAPER_SETTINGS["lenet5"]
    for row, kept, name in zip(result["layers"], settings["kept"], settings["names"]):
        assert row["paper_name"] == name
        assert abs(row["nnz"] - kept * row["weights"]) <= 0.5
        assert row["weight_bits_pq"] == settings["bits"][row["kind"]] and row["index_bits_pq"] == 5
    assert result["compress_s"] == pytest.approx(sum(result["stages_s"][k] for k in ("prune_s", "quantize_s", "encode_write_s")))
    assert result["peak_rss_bytes"] >= result["dense_bytes"]
    cm = load_compressed(path)
    decoded, reference = to_dense_module(cm).state_dict(), cm.state_dict()
    assert decoded.keys() == reference.keys()
    assert all(torch.equal(decoded[k], torch.from_numpy(reference[k])) for k in decoded)


def test_benchmark_and_decoder_reject_unknown_input() -> None:
    with pytest.raises(ConfigError, match="expected model 'vgg16' or 'alexnet', got 'resnet'"):
        run_scale_benchmark("resnet")
    model = trained_like_(empty_model("lenet5"))
    with pytest.raises(CheckpointError, match=r"LeNet5: the compressed file has no values for \[.conv1.bias."):
        to_dense_module(CompressedModel("lenet5", [], extras={"conv1.weight": model.conv1.weight.detach().numpy()}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths() -> None:
    weight = torch.randn(300, 784, device="cuda")
    positions, values = prune_survivors(weight, 0.9)
    ref_positions, _ = _reference(weight, 0.9)
    assert positions.device.type == "cuda" and torch.equal(positions, ref_positions)
    result = run_scale_benchmark("alexnet", quick=True, device="cuda")
    assert result["device"] == "cuda"
