"""Layer handlers: which modules are weight layers, their kinds and attrs, user handlers, and the
kinds without a test elsewhere (Conv3d, EmbeddingBag, Hugging Face's Conv1D) through a real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import deepcompress as dc
from deepcompress.compressed import CompressedLayer
from deepcompress.format import from_bytes, to_bytes
from deepcompress import handlers
from deepcompress.handlers import LayerHandler, handler_for, known_kinds, register_handler
from deepcompress.quantize import export_compressed
from deepcompress.runtime import SparseCodebookEmbedding
from deepcompress.selection import select_layers


class Conv1D(nn.Module):
    """A stand-in with the name and layout of Hugging Face's GPT-2 Conv1D: ``x @ W + b``, W (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Scaled(nn.Module):
    """A user's own weight layer: ``scale * (x @ W.T)``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * F.linear(x, self.weight)


@pytest.mark.parametrize(
    ("module", "kind"),
    [
        (nn.Linear(3, 2), "linear"),
        (nn.Conv1d(2, 2, 3), "conv1d"),
        (nn.Conv2d(4, 4, 3, groups=4), "conv2d"),
        (nn.Conv3d(1, 2, 2), "conv3d"),
        (nn.Embedding(5, 3), "embedding"),
        (nn.EmbeddingBag(5, 3), "embedding_bag"),
        (Conv1D(4, 3), "hf_conv1d"),
        (nn.BatchNorm2d(3), None),
        (nn.LayerNorm(3), None),
        (Scaled(), None),
    ],
)
def test_handler_kinds(module: nn.Module, kind: str | None) -> None:
    handler = handler_for(module)
    assert (handler.kind if handler else None) == kind


def test_subclasses_count_and_attrs_describe_the_layer() -> None:
    class MyLinear(nn.Linear):
        pass

    assert handler_for(MyLinear(2, 2)).kind == "linear"
    depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, padding_mode="reflect")
    assert handler_for(depthwise).attrs(depthwise) == {
        "stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "groups": 8, "padding_mode": "reflect",
    }
    bag = nn.EmbeddingBag(5, 3, mode="max", padding_idx=0)
    assert handler_for(bag).attrs(bag) == {"padding_idx": 0, "mode": "max"}


def test_a_user_handler_makes_a_new_kind_compressible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_REGISTRY", list(handlers._REGISTRY))  # this test's registrations end with it
    model = nn.Sequential(Scaled(), nn.ReLU(), nn.Linear(4, 2))
    assert [n for n, _ in select_layers(model)] == ["2"]
    register_handler(LayerHandler("scaled", (Scaled,)))
    assert "scaled" in known_kinds()
    assert [n for n, _ in select_layers(model)] == ["0", "2"]
    dc.quantize_(model, dc.QuantizeConfig(bits=3))
    cm = from_bytes(to_bytes(export_compressed(model, "Sequential")))
    assert cm.layer("0").kind == "scaled"
    x = torch.randn(3, 6)
    expected = model(x)
    fresh = nn.Sequential(Scaled(), nn.ReLU(), nn.Linear(4, 2))
    assert torch.equal(dc.to_dense_module(cm, model=fresh)(x), expected)
    with pytest.raises(dc.ConfigError, match="expected classes or class_names to match, got neither"):
        register_handler(LayerHandler("empty"))
    with pytest.raises(TypeError, match="expected a LayerHandler, got str"):
        register_handler("linear")  # type: ignore[arg-type]


class Mixed3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 2)
        self.bag = nn.EmbeddingBag(10, 3, mode="sum")
        self.proj = Conv1D(5, 3)

    def forward(self, volume: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(volume).mean(dim=(2, 3, 4))
        return self.proj(pooled + self.bag(tokens))


def test_conv3d_embedding_bag_and_hf_conv1d_round_trip_through_a_file() -> None:
    torch.manual_seed(0)
    model = Mixed3d()
    dc.prune_(model, dc.PruneConfig(method="sparsity", sparsity=0.5))
    dc.quantize_(model, dc.QuantizeConfig(bits=3))
    model.eval()
    volume, tokens = torch.randn(2, 1, 3, 3, 3), torch.tensor([[1, 2, 3], [4, 4, 9]])
    with torch.no_grad():
        expected = model(volume, tokens)
    cm = from_bytes(to_bytes(export_compressed(model, "Mixed3d")))
    assert {l.name: l.kind for l in cm.layers} == {"conv": "conv3d", "bag": "embedding_bag", "proj": "hf_conv1d"}
    assert cm.layer("proj").bias is None and "proj.bias" in cm.extras  # indexed by output, not by stored row
    with torch.no_grad():
        assert torch.equal(dc.to_dense_module(cm, model=Mixed3d())(volume, tokens), expected)
        sparse = dc.runtime.to_sparse_module(cm, model=Mixed3d())
        assert isinstance(sparse.proj, dc.runtime.SparseCodebookLinear)
        torch.testing.assert_close(sparse(volume, tokens), expected, rtol=1e-5, atol=1e-6)


def test_transposed_layer_is_the_transposed_weight() -> None:
    rng = np.random.default_rng(0)
    positions = np.sort(rng.choice(12, size=7, replace=False))
    layer = CompressedLayer("w", "hf_conv1d", (3, 4), np.array([0.5, -1.0, 2.0], np.float32), positions,
                            rng.integers(0, 3, size=7), None, 2, 4)
    assert np.array_equal(layer.transposed().dense_weight(), layer.dense_weight().T)


def test_sparse_embedding_decodes_only_the_rows_looked_up() -> None:
    torch.manual_seed(0)
    table = nn.Embedding(50, 6, padding_idx=0)
    dc.prune_(nn.Sequential(table), dc.PruneConfig(method="sparsity", sparsity=0.8))
    with torch.no_grad():
        table.weight[7] = 0.0  # an empty row
    model = nn.Sequential(table)
    dc.quantize_(model, dc.QuantizeConfig(bits=4))
    layer = export_compressed(model, "Sequential").layer("0")
    sparse = SparseCodebookEmbedding.from_compressed(layer, padding_idx=0)
    indices = torch.tensor([[0, 7, 49], [3, 3, 12]])
    assert torch.equal(sparse(indices), F.embedding(indices, torch.from_numpy(layer.dense_weight())))
    with pytest.raises(IndexError, match=r"expected indices in \[0, 50\), got \[0, 50\]"):
        sparse(torch.tensor([0, 50]))


def test_tiny_gpt2_with_conv1d_and_a_tied_output_layer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(config).eval()
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    post_training = dc.PipelineConfig(
        prune=dc.PruneConfig(method="sparsity", sparsity=0.5, epochs_per_round=0),
        quantize=dc.QuantizeConfig(bits=4, epochs=0),
        encode=dc.EncodeConfig(value_dtype="float32"),
    )
    out = tmp_path / "gpt2.dcz"
    dc.compress(gpt2, post_training, out=out, progress=False, log=lambda _: None)
    tokens = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        expected = gpt2(tokens).logits
    cm = dc.load_compressed(out)
    assert cm.tied == {"lm_head.weight": "transformer.wte.weight"}
    assert {l.kind for l in cm.layers} == {"embedding", "hf_conv1d"}
    loaded = dc.load(out)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, expected)
        torch.testing.assert_close(dc.load(out, runtime="sparse")(tokens).logits, expected, rtol=1e-4, atol=1e-5)
