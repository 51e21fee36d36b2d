"""Sparse codebook runtime layers against the decoded dense layer (F.linear / F.conv2d)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.models import build_model
from deepcompress.runtime import (
    Backend,
    PackedCodebookCSR,
    SparseCodebookConv2d,
    SparseCodebookLinear,
    kernels,
    to_sparse_module,
)
from deepcompress.runtime.dispatch import resolve

# Each backend selected by what is installed (flags patched), as "auto" would pick it there.
BACKENDS = ["simd", "numba", "torch"]


def random_layer(
    shape: tuple[int, ...],
    density: float,
    rng: np.random.Generator,
    kind: str = "linear",
    weight_bits: int = 5,
    positions: np.ndarray | None = None,
    bias: bool = True,
    name: str = "fc",
) -> CompressedLayer:
    numel = int(np.prod(shape))
    if positions is None:
        positions = np.flatnonzero(rng.random(numel) < density)
    k = min(2**weight_bits, 600)  # 600 needs 10 bits
    codebook = rng.standard_normal(k).astype(np.float32)
    codes = rng.integers(0, k, positions.size)
    b = rng.standard_normal(shape[0]).astype(np.float32) if bias else None
    return CompressedLayer(name, kind, shape, codebook, positions, codes, b, weight_bits, 5)


def use_backend(name: str, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """Make ``name`` the backend "auto" resolves to, as on a machine with only what it needs."""
    if name == "simd" and not kernels.HAVE_SIMD:
        pytest.skip("the AVX-512 extension is not built or this CPU lacks AVX-512")
    if name == "numba" and not kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(kernels, "HAVE_SIMD", name == "simd")
    monkeypatch.setattr(kernels, "HAVE_NUMBA", name == "numba" or (name == "simd" and kernels.HAVE_NUMBA))
    return Backend(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    return use_backend(request.param, monkeypatch)


def check_linear(layer: CompressedLayer, batch: int, rng: np.random.Generator, backend: str = "auto") -> None:
    module = SparseCodebookLinear.from_compressed(layer, dense_batch=None, backend=backend)  # never dense
    x = torch.from_numpy(rng.standard_normal((batch, layer.shape[1])).astype(np.float32))
    bias = None if layer.bias is None else torch.from_numpy(layer.bias)
    expected = F.linear(x, torch.from_numpy(layer.dense_weight()), bias)
    got = module(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 1.0])
def test_linear_matches_dense(backend: Backend, batch: int, density: float) -> None:
    rng = np.random.default_rng(int(density * 100) + batch)
    layer = random_layer((37, 300), density, rng)
    assert resolve("auto", PackedCodebookCSR.from_layer(layer)) is backend
    check_linear(layer, batch, rng)


@pytest.mark.parametrize("batch", [1, 5])
def test_linear_block_edges_gaps_and_empty_rows(backend: Backend, batch: int) -> None:
    """Columns on both sides of the 2048-wide block edges, gaps of 31/32/33 (5-bit index bound),
    empty rows (0, 2 and the last), and a row that is completely full."""
    rng = np.random.default_rng(1)
    rows, cols = 6, 5000
    picks = {
        1: [0, 31, 63, 96, 2047, 2048, 2049, 4095, 4096, 4999],
        3: list(range(0, cols, 33)),
        4: list(range(cols)),
    }
    positions = np.array(sorted(r * cols + c for r, cs in picks.items() for c in cs))
    check_linear(random_layer((rows, cols), 0, rng, positions=positions), batch, rng)


@pytest.mark.parametrize("weight_bits", [1, 2, 8, 10])
def test_linear_codebook_widths(backend: Backend, weight_bits: int) -> None:
    rng = np.random.default_rng(weight_bits)
    layer = random_layer((20, 3000), 0.1, rng, weight_bits=weight_bits, bias=False)
    packed = PackedCodebookCSR.from_layer(layer)
    assert packed.words.dtype == (np.uint16 if weight_bits <= 8 else np.uint32)
    for batch in (1, 4):
        check_linear(layer, batch, rng)


@pytest.mark.parametrize("dense_batch", [None, 2, "auto"])
def test_linear_dense_batch_policy(backend: Backend, dense_batch: object) -> None:
    rng = np.random.default_rng(6)
    layer = random_layer((30, 200), 0.3, rng)
    module = SparseCodebookLinear.from_compressed(layer, dense_batch=dense_batch)
    auto = None if backend is Backend.SIMD else 16  # the AVX-512 batch kernel never needs the dense copy
    assert module.dense_from(backend) == {None: None, 2: 2, "auto": auto}[dense_batch]
    for batch in (1, 2, 20):
        x = torch.from_numpy(rng.standard_normal((batch, 200)).astype(np.float32))
        expected = F.linear(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias))
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)
    assert (module._dense is not None) == (module.dense_from(backend) is not None)
    sparse = SparseCodebookLinear.from_compressed(random_layer((30, 200), 0.05, rng))
    assert sparse.dense_from(backend) is None  # sparse layers keep the batch kernel
    with pytest.raises(ValueError, match=r"expected dense_batch 'auto', None or an int >= 1, got 0"):
        SparseCodebookLinear.from_compressed(layer, dense_batch=0)


def test_linear_leading_dims_and_bad_input() -> None:
    rng = np.random.default_rng(2)
    layer = random_layer((8, 16), 0.5, rng)
    module = SparseCodebookLinear.from_compressed(layer)
    x = torch.from_numpy(rng.standard_normal((2, 3, 16)).astype(np.float32))
    expected = F.linear(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias))
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., 16\), got \(2, 15\)"):
        module(torch.zeros(2, 15))
    with pytest.raises(TypeError, match="expected a float32 CPU tensor, got torch.float64"):
        module(torch.zeros(2, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected kind 'linear', got 'conv2d'"):
        SparseCodebookLinear.from_compressed(random_layer((4, 1, 3, 3), 0.5, rng, kind="conv2d"))


def test_packed_bytes_are_two_per_weight() -> None:
    rng = np.random.default_rng(3)
    layer = random_layer((100, 4096), 0.1, rng)
    packed = PackedCodebookCSR.from_layer(layer)
    assert packed.words.nbytes == 2 * layer.nnz
    assert packed.nbytes == 2 * layer.nnz + packed.ptr.nbytes + 32 * 4
    crow, col, values = packed.csr_arrays()
    assert crow[0] == 0 and crow[-1] == layer.nnz and np.all(np.diff(crow) >= 0)
    dense = np.zeros(layer.shape, np.float32)
    dense[np.repeat(np.arange(100), np.diff(crow)), col] = values
    np.testing.assert_array_equal(dense, layer.dense_weight())


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize(
    "stride,padding,dilation", [((1, 1), (0, 0), (1, 1)), ((2, 1), (1, 2), (1, 1)), ((1, 1), (1, 1), (2, 2))]
)
def test_conv_matches_dense(backend: Backend, batch: int, stride: tuple, padding: tuple, dilation: tuple) -> None:
    rng = np.random.default_rng(batch)
    layer = random_layer((7, 3, 3, 5), 0.4, rng, kind="conv2d", weight_bits=8, name="conv")
    module = SparseCodebookConv2d.from_compressed(layer, stride=stride, padding=padding, dilation=dilation)
    x = torch.from_numpy(rng.standard_normal((batch, 3, 11, 13)).astype(np.float32))
    expected = F.conv2d(
        x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias), stride, padding, dilation
    )
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)


def random_model(name: str, rng: np.random.Generator, density: float = 0.1) -> CompressedModel:
    model = build_model(name)
    layers = []
    for qual, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            kind = "linear" if isinstance(module, torch.nn.Linear) else "conv2d"
            shape = tuple(module.weight.shape)
            layers.append(random_layer(shape, density, rng, kind=kind, weight_bits=5 if kind == "linear" else 8,
                                       name=qual))
    return CompressedModel(name, layers)


def dense_model(cm: CompressedModel) -> torch.nn.Module:
    model = build_model(cm.model_name)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in cm.state_dict().items()})
    return model.eval()


@pytest.mark.parametrize("conv_mode", ["dense", "sparse"])
@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_to_sparse_module_predictions(backend: Backend, name: str, conv_mode: str) -> None:
    rng = np.random.default_rng(4)
    cm = random_model(name, rng)
    sparse = to_sparse_module(cm, conv_mode=conv_mode)
    assert not sparse.training and not any(p.requires_grad for p in sparse.parameters())
    assert isinstance(sparse.fc1, SparseCodebookLinear)
    if name == "lenet5":
        assert isinstance(sparse.conv2, SparseCodebookConv2d) == (conv_mode == "sparse")
    x = torch.from_numpy(rng.random((16, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        expected = dense_model(cm)(x)
        got = sparse(x)
        one = sparse(x[:1])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(one, expected[:1], rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_to_sparse_module_errors() -> None:
    rng = np.random.default_rng(5)
    cm = random_model("lenet300", rng)
    with pytest.raises(ConfigError, match=r"conv_mode: expected one of \['dense', 'sparse'\], got 'fast'"):
        to_sparse_module(cm, conv_mode="fast")
    partial = CompressedModel("lenet300", cm.layers[:2])
    with pytest.raises(CheckpointError, match=r"extras are missing \['fc3.bias', 'fc3.weight'\]"):
        to_sparse_module(partial)
    partial.extras = {"fc3.weight": np.zeros((10, 100), np.float32), "fc3.bias": np.zeros(10, np.float32)}
    assert isinstance(to_sparse_module(partial).fc3, torch.nn.Linear)
    wrong = CompressedModel("lenet300", [random_layer((300, 784), 0.1, rng, name="fc9")] + cm.layers[1:])
    with pytest.raises(CheckpointError, match="compressed layer 'fc9' is not a submodule of LeNet300"):
        to_sparse_module(wrong)
