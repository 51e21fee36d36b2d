"""The scale benchmark and the memory-frugal library path it measures: chunked exact pruning masks,
narrow index types, k-means after the dense weight is freed, trained-like weights, bit-exact decoding."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from deepcompress.perf.scale import LIBRARY_PATH, PAPER_SETTINGS, run_scale_benchmark, trained_like_
from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.runtime.dense import empty_model, to_dense_module
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.format import from_bytes, load_compressed, to_bytes
from deepcompress.prune import global_masks, masks, sparsity_mask
from deepcompress.quantize import QuantizeConfig, export_compressed, quantize_
from deepcompress.quantize import apply as quantize_apply
from deepcompress.quantize.shared import codebook_of, shared_weight_of


def _reference_keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Brute force: prune the ``k`` smallest scores, earliest position first among ties."""
    order = sorted(range(scores.numel()), key=lambda i: (float(scores[i]), i))
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    return keep


@pytest.fixture(params=[(1 << 20, 1 << 18), (97, 5), (13, 1)], ids=["default", "small-chunks", "one-sample"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks and samples small enough that cuts fall inside chunks and brackets miss."""
    chunk, sample = request.param
    monkeypatch.setattr(masks, "CHUNK", chunk)
    monkeypatch.setattr(masks, "_SAMPLE", sample)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.91, 0.999])
@pytest.mark.parametrize("ties", [False, True])
def test_chunked_sparsity_mask_equals_brute_force(chunking: None, sparsity: float, ties: bool) -> None:
    g = torch.Generator().manual_seed(int(1000 * sparsity) + ties)
    weight = torch.randn(30, 40, generator=g)
    if ties:  # few distinct magnitudes: the cut falls inside a run of equal values
        weight = torch.round(weight * 3) / 3
    previous = torch.rand(30, 40, generator=g) > 0.2
    scores = weight.abs().flatten().masked_fill(~previous.flatten(), -1.0)
    k = max(masks.count_to_prune(sparsity, weight.numel()), int((~previous).sum()))
    assert torch.equal(sparsity_mask(weight, sparsity, previous).flatten(), _reference_keep(scores, k))
    fresh = weight.abs().flatten()
    expected = _reference_keep(fresh, masks.count_to_prune(sparsity, fresh.numel()))
    assert torch.equal(sparsity_mask(weight, sparsity).flatten(), expected)


def test_chunked_global_masks_equal_brute_force(chunking: None) -> None:
    g = torch.Generator().manual_seed(7)
    weights = {f"l{i}": torch.round(torch.randn(n, generator=g) * 2) / 2 for i, n in enumerate((50, 1, 130))}
    weights["l3"] = torch.round(torch.randn(4, 5, generator=g) * 2).double() / 2  # float64 joins in float64
    scores = torch.cat([w.abs().flatten().double() for w in weights.values()])
    result = global_masks(weights, 0.6)
    kept = torch.cat([m.flatten() for m in result.values()])
    assert torch.equal(kept, _reference_keep(scores, masks.count_to_prune(0.6, scores.numel())))
    assert all(m.shape == weights[n].shape for n, m in result.items())


def test_masks_reject_non_finite_weights_in_any_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masks, "CHUNK", 4)
    weight = torch.ones(20)
    weight[17] = float("inf")
    for fn in (lambda: sparsity_mask(weight, 0.0), lambda: sparsity_mask(weight, 0.5)):
        with pytest.raises(ValueError, match="sparsity_mask: weights contain NaN or inf"):
            fn()


def _pruned_linear(rows: int, cols: int, kept: float) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(cols, rows))
    torch.manual_seed(0)
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(rows, cols) < kept)
    return model


def test_quantize_keeps_narrow_buffers_and_clusters_after_freeing_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _pruned_linear(60, 50, 0.3)
    dense = model[0].weight.detach().clone()
    seen: list[int] = []
    real_kmeans = quantize_apply.layer_kmeans

    def spy(values: np.ndarray, bits: int, cfg: QuantizeConfig, index: int):  # type: ignore[no-untyped-def]
        seen.append(codebook_of(model[0]).numel())  # the weight Parameter is already the (provisional) codebook
        return real_kmeans(values, bits, cfg, index)

    monkeypatch.setattr(quantize_apply, "layer_kmeans", spy)
    quantize_(model, QuantizeConfig(bits=4))
    shared = shared_weight_of(model[0])
    assert seen == [1]
    assert shared.positions.dtype == torch.int32 and shared.codes.dtype == torch.uint8
    assert torch.equal(shared.positions.long(), torch.nonzero(dense.flatten()).flatten())
    weight = model[0].weight.detach()
    assert torch.equal(weight != 0, dense != 0) and torch.unique(weight[weight != 0]).numel() <= 16
    layer = export_compressed(model, "custom").layers[0]
    assert layer.positions.dtype == np.int32 and layer.codes.dtype == np.int32
    assert np.array_equal(layer.dense_weight(), weight.numpy())


def test_compressed_layer_narrows_indices_without_wrapping() -> None:
    def layer(positions: np.ndarray, codes: np.ndarray) -> CompressedLayer:
        return CompressedLayer("fc", "linear", (2, 3), np.array([0.5, 1.0], np.float32), positions, codes, None, 1, 2)

    ok = layer(np.array([0, 4], np.int64), np.array([1, 0], np.int64))
    assert ok.positions.dtype == np.int32 and ok.codes.dtype == np.int32
    back = from_bytes(to_bytes(CompressedModel("custom", [ok]))).layers[0]
    assert back.positions.dtype == np.int32 and back.positions.tolist() == [0, 4] and back.codes.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 6\)"):
        layer(np.array([0, 2**32 + 4], np.int64), np.array([1, 0]))  # would wrap to 4 in int32
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\)"):
        layer(np.array([0, 4]), np.array([2**32, 0], np.int64))


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
    assert result["model"] == "lenet5" and result["stand_in_for"] == "vgg16" and result["path"] == LIBRARY_PATH
    assert result["file_bytes"] == os.path.getsize(path)
    assert result["ratio"] == pytest.approx(result["dense_bytes"] / result["file_bytes"])
    assert result["dense_bytes"] == 4 * 431_080
    settings = PAPER_SETTINGS["lenet5"]
    for row, name, kept in zip(result["layers"], settings["names"], settings["kept"]):
        assert row["paper_name"] == name
        assert row["nnz"] == row["weights"] - masks.count_to_prune(1.0 - kept, row["weights"])  # exact counts
        assert row["weight_bits_pq"] == settings["bits"][row["kind"]] and row["index_bits_pq"] == 5
    stages = result["stages_s"]
    compress = ("prune", "quantize", "export", "encode_write")
    assert result["compress_s"] == pytest.approx(sum(stages[f"{k}_s"] for k in compress))
    assert result["decode_s"] == pytest.approx(stages["read_s"] + stages["decode_dense_s"])
    assert set(result["stage_end_rss_bytes"]) == {k[:-2] for k in stages}
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
    mask = sparsity_mask(weight, 0.9)
    assert mask.device.type == "cuda" and torch.equal(mask.cpu(), sparsity_mask(weight.cpu(), 0.9))
    result = run_scale_benchmark("alexnet", quick=True, device="cuda")
    assert result["device"] == "cuda"
