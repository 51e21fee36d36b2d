"""The AVX-512 kernel against F.linear / F.conv2d, its thread split, backend choice and fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deepcompress.errors import ConfigError
from deepcompress.runtime import Backend, PackedCodebookCSR, SparseCodebookConv2d, SparseCodebookLinear, kernels
from deepcompress.runtime import available_backends, simd
from deepcompress.runtime.dispatch import resolve
from test_runtime import random_layer, use_backend

needs_simd = pytest.mark.skipif(not kernels.HAVE_SIMD, reason="AVX-512 extension not built or CPU lacks AVX-512")


def linear_pair(layer, batch: int, rng: np.random.Generator, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    module = SparseCodebookLinear.from_compressed(layer, dense_batch=None, backend=backend)
    x = torch.from_numpy(rng.standard_normal((batch, layer.shape[1])).astype(np.float32))
    bias = None if layer.bias is None else torch.from_numpy(layer.bias)
    return module(x), F.linear(x, torch.from_numpy(layer.dense_weight()), bias)


def awkward_positions(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Empty rows, a full row, rows of 1-40 nonzeros (tails of every length mod 16), and random rows."""
    picks: list[np.ndarray] = []
    for r in range(rows):
        kind = r % 5
        if kind == 0:
            continue  # empty
        if kind == 1 and r == 1:
            cs = np.arange(cols)  # completely full
        elif kind in (1, 2):
            cs = np.sort(rng.choice(cols, size=1 + r % 40, replace=False))  # short: tail only, or 16/32 + tail
        else:
            cs = np.flatnonzero(rng.random(cols) < 0.2)
        picks.append(r * cols + cs)
    return np.concatenate(picks)


@needs_simd
@pytest.mark.parametrize("batch", [1, 3, 16, 64, 100])
@pytest.mark.parametrize("weight_bits", [2, 4, 5, 8])
def test_simd_matches_dense_on_awkward_rows(batch: int, weight_bits: int) -> None:
    """Column blocks > 1 (5000 columns; 256-wide blocks at 8 bits), every tail length, batch tiles of
    1-4 vectors with a masked last one (3, 100 = 64 + 36)."""
    rng = np.random.default_rng(batch * 10 + weight_bits)
    rows, cols = 45, 5000
    layer = random_layer((rows, cols), 0, rng, weight_bits=weight_bits, positions=awkward_positions(rows, cols, rng))
    assert (PackedCodebookCSR.from_layer(layer).n_blocks > 1) == (weight_bits >= 4)  # 2 bits: 16384-wide
    got, expected = linear_pair(layer, batch, rng, "simd")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)  # the full row sums 5000 products


@needs_simd
@pytest.mark.parametrize("batch", [1, 64])
def test_simd_all_zero_layer(batch: int) -> None:
    rng = np.random.default_rng(7)
    layer = random_layer((9, 70), 0.0, rng, positions=np.array([], dtype=np.int64))
    got, expected = linear_pair(layer, batch, rng, "simd")
    assert torch.equal(got, expected)  # only the bias is left


@needs_simd
@pytest.mark.parametrize("batch", [1, 64])
def test_simd_threaded_row_split_matches(batch: int) -> None:
    """A product above PARALLEL_MIN_WORK runs in nnz-balanced row chunks on numba's threads."""
    rng = np.random.default_rng(8)
    rows, cols = 300, 3000
    density = kernels.PARALLEL_MIN_WORK / (rows * cols) * 1.5
    positions = np.flatnonzero(rng.random(rows * cols) < density * (np.arange(rows * cols) // cols % 3))
    layer = random_layer((rows, cols), 0, rng, positions=positions)  # uneven rows, every third one empty
    assert layer.nnz >= kernels.PARALLEL_MIN_WORK
    got, expected = linear_pair(layer, batch, rng, "simd")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@needs_simd
def test_row_splits_balance_nonzeros() -> None:
    rng = np.random.default_rng(9)
    packed = PackedCodebookCSR.from_layer(random_layer((50, 5000), 0.1, rng))
    splits = kernels._row_splits(packed.ptr, packed.n_blocks, packed.rows, 4)
    assert splits[0] == 0 and splits[-1] == packed.rows and np.all(np.diff(splits) >= 0)
    per_chunk = np.diff(packed.ptr[:: packed.n_blocks][splits])
    assert per_chunk.sum() == packed.nnz and per_chunk.max() - per_chunk.min() <= 2 * 5000 * 0.15


@needs_simd
def test_simd_row_range_writes_only_its_rows() -> None:
    rng = np.random.default_rng(10)
    layer = random_layer((20, 300), 0.3, rng)
    p = PackedCodebookCSR.from_layer(layer)
    x = rng.standard_normal(300).astype(np.float32)
    out = np.full(20, np.nan, dtype=np.float32)
    simd.LIB.dc_spmv(p.ptr.ctypes.data, p.words.ctypes.data, p.codebook.ctypes.data, p.n_blocks, p.code_bits,
                     p.col_bits, x.ctypes.data, out.ctypes.data, 5, 12)
    assert np.isnan(out[:5]).all() and np.isnan(out[12:]).all()
    np.testing.assert_allclose(out[5:12], layer.dense_weight()[5:12] @ x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_three_backends_agree(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    layer = random_layer((64, 2500), 0.15, rng)
    x = torch.from_numpy(rng.standard_normal((batch, 2500)).astype(np.float32))
    outputs = {}
    for name in available_backends():
        with monkeypatch.context() as m:
            use_backend(name, m)
            module = SparseCodebookLinear.from_compressed(layer, dense_batch=None)
            assert resolve(module.backend, module.packed).value == name
            outputs[name] = module(x)
    expected = F.linear(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias))
    assert len(outputs) >= 1
    for name, got in outputs.items():
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("batch", [1, 2])
def test_conv_runs_on_every_backend(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conv layers share the packed product: 8-bit codebooks (256-column blocks, table lookup)."""
    rng = np.random.default_rng(12)
    layer = random_layer((12, 40, 3, 3), 0.3, rng, kind="conv2d", weight_bits=8, name="conv")
    assert PackedCodebookCSR.from_layer(layer).n_blocks == 2
    x = torch.from_numpy(rng.standard_normal((batch, 40, 9, 7)).astype(np.float32))
    expected = F.conv2d(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias), padding=1)
    for name in available_backends():
        with monkeypatch.context() as m:
            use_backend(name, m)
            module = SparseCodebookConv2d.from_compressed(layer, padding=(1, 1), backend=name)
            torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4, msg=name)


def test_backend_requests_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(13)
    narrow = PackedCodebookCSR.from_layer(random_layer((4, 50), 0.5, rng))
    wide = PackedCodebookCSR.from_layer(random_layer((4, 50), 0.5, rng, weight_bits=10))
    with pytest.raises(ConfigError, match=r"backend: expected one of \['auto', 'simd', 'numba', 'torch'\], got 'avx'"):
        resolve("avx", narrow)
    assert resolve("torch", narrow) is Backend.TORCH
    monkeypatch.setattr(kernels, "HAVE_SIMD", True)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", True)
    assert resolve("auto", wide) is Backend.NUMBA  # 32-bit words run on numba
    with pytest.raises(ConfigError, match=r"backend 'simd' expected 16-bit words .* got uint32 words"):
        resolve("simd", wide)
    monkeypatch.setattr(kernels, "HAVE_SIMD", False)
    with pytest.raises(ConfigError, match="backend 'simd': the AVX-512 extension is not available"):
        resolve("simd", narrow)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    assert resolve("auto", narrow) is Backend.TORCH and available_backends() == ["torch"]
    with pytest.raises(ConfigError, match=r"backend 'numba': numba is not installed"):
        resolve("numba", narrow)


def test_loader_without_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simd.importlib.util, "find_spec", lambda name: None)
    assert simd._load() is None


def test_package_runs_when_extension_is_missing(tmp_path) -> None:
    """A fresh interpreter that cannot find the extension (as after a build without a C compiler)
    still loads and runs a sparse model, on numba."""
    script = textwrap.dedent(
        """
        import importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name.endswith("._simd") else real(name, *a)
        import numpy as np, torch
        from deepcompress.runtime import HAVE_SIMD, SparseCodebookLinear, available_backends
        from deepcompress.compressed import CompressedLayer
        rng = np.random.default_rng(0)
        pos = np.flatnonzero(rng.random(40 * 90) < 0.2)
        layer = CompressedLayer("fc", "linear", (40, 90), rng.standard_normal(32).astype(np.float32), pos,
                                rng.integers(0, 32, pos.size), None, 5, 5)
        x = torch.from_numpy(rng.standard_normal((3, 90)).astype(np.float32))
        got = SparseCodebookLinear.from_compressed(layer)(x)
        ref = x @ torch.from_numpy(layer.dense_weight()).T
        assert not HAVE_SIMD and "simd" not in available_backends()
        print(float((got - ref).abs().max()))
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-4
