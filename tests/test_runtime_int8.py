"""The opt-in int8 batch-1 kernel (format "int8", ``int8_spmv`` in ``_simd.c``) against F.linear in
float64, within an error bound derived from its scales.

Derivation. For one output, with fp32 weights ``w_i`` (codebook values, 0 where pruned) and inputs
``x_i``, the kernel multiplies ``wq_i = s_w * round(w_i / s_w)`` by ``xq_i = s_b * round(x_i / s_b)``,
where ``s_w = max|codebook| / 127`` and ``s_b = max_{j in block b}|x_j| / 127`` for the 64-input block
``b`` holding ``i``. Rounding to nearest gives ``|w_i - wq_i| <= s_w / 2`` (0 where ``w_i = 0``) and
``|x_i - xq_i| <= s_b / 2``. Since ``w x - wq xq = (w - wq) x + wq (x - xq)`` and ``|wq| <= |w| + s_w/2``:

    |y - y_int8| <= s_w/2 * sum_{w_i != 0} |x_i|                 (weight rounding)
                  + sum_b s_b/2 * sum_{i in b} |w_i|             (input rounding)
                  + sum_b s_w/2 * s_b/2 * #{i in b: w_i != 0}    (both)

plus float rounding in the kernel's fp32 accumulation (a 1e-5 relative slack; the int8 dot products
are exact). The bound is tight enough to mean something: a kernel that ignored either scale or read
the wrong block's scale would break it (``test_bound_catches_ignored_scales``).
"""

from __future__ import annotations

import copy
import pickle
import types

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deepcompress.compressed import CompressedLayer
from deepcompress.errors import ConfigError
from deepcompress.runtime import PackedCodebookCSR, SparseCodebookLinear, simd, to_sparse_module
from deepcompress.runtime.formats import INT8_BLOCK, Int8Codes
from deepcompress.runtime.plan import SINGLE, Format, bind, candidates, layout_for
from test_runtime import random_layer
from test_runtime_formats import awkward

needs_int8 = pytest.mark.skipif(simd.int8_missing() is not None, reason=f"int8 kernel: needs {simd.int8_missing()}")
SLACK = 1e-5  # relative to sum |w| |x| + |bias|: fp32 accumulation of the block sums and the bias


def codebook_layer(shape: tuple[int, int], entries: int, positions: np.ndarray, rng: np.random.Generator,
                   bias: bool = True) -> CompressedLayer:
    """A linear layer whose codebook has exactly ``entries`` values, each used (when there are enough weights)."""
    codebook = rng.standard_normal(entries).astype(np.float32)
    codes = np.arange(positions.size) % entries
    rng.shuffle(codes)
    bits = max(1, int(np.ceil(np.log2(entries))))
    b = rng.standard_normal(shape[0]).astype(np.float32) if bias else None
    return CompressedLayer("fc", "linear", shape, codebook, positions, codes, b, bits, 5)


def uneven_input(cols: int, rng: np.random.Generator) -> np.ndarray:
    """Normal inputs whose 64-input blocks differ in magnitude by up to 4**7, so a wrong block scale shows."""
    scale = 4.0 ** (np.arange(cols) // INT8_BLOCK % 8 - 3)
    return (rng.standard_normal(cols) * scale).astype(np.float32)


def quantize_input(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's input rounding, in numpy: ``(q, scales)`` with ``q`` of shape ``(blocks, 64)``."""
    blocks = np.zeros(-(-x.size // INT8_BLOCK) * INT8_BLOCK, dtype=np.float32)
    blocks[: x.size] = x
    blocks = blocks.reshape(-1, INT8_BLOCK)
    peak = np.abs(blocks).max(axis=1)
    inv = np.divide(np.float32(127), peak, out=np.zeros_like(peak), where=peak > 0)
    return np.rint(blocks * inv[:, None]), peak / np.float32(127)


def error_bound(weight: np.ndarray, x: np.ndarray, s_w: float, s_x: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Per output: the bound of the module docstring plus the fp32 slack."""
    w, ax = np.abs(weight.astype(np.float64)), np.abs(x.astype(np.float64))
    nz = (weight != 0).astype(np.float64)
    s_col = np.repeat(s_x.astype(np.float64), INT8_BLOCK)[: x.size]
    b = 0.0 if bias is None else np.abs(bias.astype(np.float64))
    return (0.5 * s_w * (nz @ ax) + 0.5 * (w @ s_col) + 0.25 * s_w * (nz @ s_col)
            + SLACK * (w @ ax + b))


def run_int8(layer: CompressedLayer, x: np.ndarray) -> tuple[np.ndarray, SparseCodebookLinear]:
    """The int8 module's batch-1 output on ``x`` (through ``forward``) and the module."""
    module = SparseCodebookLinear.from_compressed(layer, backend="simd", format="int8")
    return module(torch.from_numpy(x[None, :]))[0].numpy(), module


def reference(layer: CompressedLayer, x: np.ndarray) -> np.ndarray:
    """F.linear in float64 on the fp32 weights."""
    bias = None if layer.bias is None else torch.from_numpy(layer.bias).double()
    return F.linear(torch.from_numpy(x).double(), torch.from_numpy(layer.dense_weight()).double(), bias).numpy()


def check_bound(layer: CompressedLayer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assert the kernel stays inside the bound; return its error and the bound."""
    got, module = run_int8(layer, x)
    layout = module._layout
    assert isinstance(layout, Int8Codes)
    _, s_x = quantize_input(x)
    error = np.abs(got.astype(np.float64) - reference(layer, x))
    bound = error_bound(layer.dense_weight(), x, layout.scale, s_x, layer.bias)
    assert np.all(error <= bound), f"worst error / bound {np.max(error / np.maximum(bound, 1e-300)):.3f}"
    return error, bound


@needs_int8
@pytest.mark.parametrize("entries", [2, 16, 32, 100, 200])
@pytest.mark.parametrize("rows", [1, 17])
@pytest.mark.parametrize("cols", [1, 31, 63, 64, 65, 130, 1000])
def test_int8_within_bound_on_awkward_shapes(entries: int, rows: int, cols: int) -> None:
    """Empty rows, a full row, columns around the 64-input block; codebooks looked up in one (<= 64
    entries with the zero code), two (<= 128) or four (<= 256) registers."""
    rng = np.random.default_rng(entries * 100_000 + rows * 1000 + cols)
    layer = codebook_layer((rows, cols), entries, awkward(rows, cols, rng), rng, bias=rows > 1)
    check_bound(layer, uneven_input(cols, rng))


@needs_int8
def test_int8_all_zero_layer_gives_the_bias() -> None:
    rng = np.random.default_rng(1)
    layer = codebook_layer((21, 77), 16, np.array([], dtype=np.int64), rng)
    got, module = run_int8(layer, rng.standard_normal(77).astype(np.float32))
    assert module._layout.scale == 0.0
    np.testing.assert_array_equal(got, layer.bias)


@needs_int8
def test_int8_matches_its_own_arithmetic() -> None:
    """The kernel computes exactly ``s_w * sum_b s_b * (int8 weights . int8 inputs of block b) + bias``,
    emulated here in numpy from the layout (up to fp32 summation order)."""
    rng = np.random.default_rng(2)
    layer = codebook_layer((40, 500), 32, np.flatnonzero(rng.random(40 * 500) < 0.3), rng)
    x = uneven_input(500, rng)
    got, module = run_int8(layer, x)
    q_w = module._layout.table[module._layout.codes].astype(np.float64)  # (rows, stride)
    q_x, s_x = quantize_input(x)
    emulated = module._layout.scale * (q_w.reshape(40, -1, INT8_BLOCK) * q_x).sum(axis=2) @ s_x + layer.bias
    magnitude = module._layout.scale * np.abs(q_w.reshape(40, -1, INT8_BLOCK) * q_x).sum(axis=2) @ s_x
    np.testing.assert_array_less(np.abs(got - emulated), 1e-6 * (magnitude + np.abs(layer.bias)) + 1e-30)


@needs_int8
def test_bound_catches_ignored_scales() -> None:
    """The kernel's actual arithmetic (emulated) stays inside the bound; the same arithmetic without the
    weight scale, without the block scales, or with each block reading its neighbour's scale does not."""
    rng = np.random.default_rng(3)
    layer = codebook_layer((64, 640), 32, np.flatnonzero(rng.random(64 * 640) < 0.3), rng)
    x = uneven_input(640, rng)
    layout = Int8Codes.from_packed(PackedCodebookCSR.from_layer(layer))
    q_w = layout.table[layout.codes].astype(np.float64).reshape(64, -1, INT8_BLOCK)
    q_x, s_x = quantize_input(x)
    block_dots = (q_w * q_x).sum(axis=2)  # (rows, blocks) exact integer dot products
    expected = reference(layer, x)
    bound = error_bound(layer.dense_weight(), x, layout.scale, s_x, layer.bias)

    def outside(s_w: float, scales: np.ndarray) -> float:
        """The fraction of outputs outside the bound."""
        return float(np.mean(np.abs(s_w * block_dots @ scales + layer.bias - expected) > bound))

    assert outside(layout.scale, s_x) == 0
    assert outside(1.0, s_x) > 0.9  # weight scale ignored
    assert outside(layout.scale, np.ones_like(s_x)) > 0.9  # block scales ignored
    assert outside(layout.scale, np.roll(s_x, 1)) > 0.9  # off by one block
    error, _ = check_bound(layer, x)  # and the kernel itself
    assert error.max() > 0  # int8 is lossy: this is not the fp32 kernel


@needs_int8
def test_int8_layout() -> None:
    """Byte codes padded to 64 columns with the zero code; the codebook rounded with max|c| / 127."""
    rng = np.random.default_rng(4)
    layer = codebook_layer((3, 70), 4, np.array([0, 69, 70 + 3, 140 + 64]), rng)
    layout = Int8Codes.from_packed(PackedCodebookCSR.from_layer(layer))
    zero = layout.table_size - 1  # the codebook size
    assert (layout.stride, layout.codes.shape, zero) == (128, (3, 128), 4)
    assert layout.codes[0, 0] == layer.codes[0] and layout.codes[0, 69] == layer.codes[1]
    assert np.count_nonzero(layout.codes != zero) == 4 and not layout.table[zero:].any()
    assert layout.scale == pytest.approx(np.abs(layer.codebook).max() / 127, rel=1e-7)
    assert np.abs(layout.table[:zero]).max() == 127
    np.testing.assert_array_less(np.abs(layout.dequantized() - layer.dense_weight()), layout.scale / 2 * (1 + 1e-6))


@needs_int8
def test_int8_nonfinite_input_gives_nan() -> None:
    """An inf or NaN input makes every output NaN (the fp32 kernels' 0 * inf and x * NaN would too)."""
    rng = np.random.default_rng(5)
    layer = codebook_layer((8, 200), 16, np.flatnonzero(rng.random(1600) < 0.5), rng)
    for bad in (np.inf, np.nan):
        x = rng.standard_normal(200).astype(np.float32)
        x[150] = bad
        assert np.isnan(run_int8(layer, x)[0]).all()


@needs_int8
def test_int8_batches_run_fp32() -> None:
    """Only batch 1 runs int8; larger batches take the fp32 packed CSR product."""
    rng = np.random.default_rng(6)
    layer = random_layer((30, 100), 0.4, rng)
    module = SparseCodebookLinear.from_compressed(layer, dense_batch=None, format="int8")
    x = torch.from_numpy(rng.standard_normal((3, 100)).astype(np.float32))
    expected = F.linear(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias))
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)


@needs_int8
def test_auto_never_picks_int8_and_a_named_int8_is_recorded() -> None:
    rng = np.random.default_rng(7)
    for density in (0.02, 0.3, 1.0):
        layer = random_layer((64, 256), density, rng)
        assert Format.INT8 not in candidates(PackedCodebookCSR.from_layer(layer), "auto")
        assert SparseCodebookLinear.from_compressed(layer, format="auto").format is not Format.INT8
    module = SparseCodebookLinear.from_compressed(layer, format="int8")
    suffixes = [""] if simd.num_threads() == 1 else ["", SINGLE]
    assert module.format is Format.INT8 and isinstance(module._layout, Int8Codes)
    assert set(module.format_us) == ({"int8" + s for s in suffixes} if len(suffixes) == 2 else set())
    assert "format=int8" in repr(module)
    x = torch.from_numpy(rng.standard_normal((1, 256)).astype(np.float32))
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):  # rebinds its own arrays
        assert clone.format is Format.INT8
        torch.testing.assert_close(clone(x), module(x), rtol=0, atol=0)



@needs_int8
@pytest.mark.parametrize("threads", [2, 3])
def test_int8_threads_match_one_thread(threads: int, eager_pool: None) -> None:
    """Rows split over 2-3 threads give the same bits as one thread (each row is summed the same way)."""
    rng = np.random.default_rng(8)
    rows, cols = 257, 2100  # 257 * 2112 / 8 work units >= PARALLEL_MIN_WORK: the pool takes part
    layer = random_layer((rows, cols), 0.3, rng)
    layout = layout_for(Format.INT8, PackedCodebookCSR.from_layer(layer))
    x = rng.standard_normal(cols).astype(np.float32)
    outputs = []
    for n in (1, threads):
        simd.set_num_threads(n)
        kernel = bind(Format.INT8, layout, layer.bias, parallel=True)
        for _ in range(3):  # repeated calls reuse the spinning workers
            out = np.full(rows, np.nan, dtype=np.float32)
            kernel(x.ctypes.data, out.ctypes.data)
            outputs.append(out)
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])


@needs_int8
def test_int8_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    wide = random_layer((8, 40), 1.0, rng, weight_bits=8)  # 256 codes in use: no room for a zero code
    with pytest.raises(ConfigError, match=r"format 'int8' takes codebooks of <= 255 entries; use 'auto'"):
        SparseCodebookLinear.from_compressed(wide, format="int8")
    layer = random_layer((8, 40), 0.5, rng)
    with pytest.raises(ConfigError, match="format 'int8' runs on the 'simd' backend only"):
        SparseCodebookLinear.from_compressed(layer, format="int8", backend="numba")
    missing = {
        "a CPU with AVX-512 VBMI and VNNI": types.SimpleNamespace(int8_supported=lambda: False),
        "a build of deepcompress.runtime._simd with the int8 kernel; rebuild it": types.SimpleNamespace(),
        "the C extension deepcompress.runtime._simd": None,
    }
    for words, lib in missing.items():
        monkeypatch.setattr(simd, "LIB", lib)
        with pytest.raises(ConfigError, match=f"format 'int8' needs {words}"):
            SparseCodebookLinear.from_compressed(layer, format="int8")


@needs_int8
def test_a_whole_model_asks_for_int8_through_to_sparse_module() -> None:
    from test_runtime import random_model

    rng = np.random.default_rng(11)
    cm = random_model("lenet300", rng)
    int8 = to_sparse_module(cm, format="int8")
    fp32 = to_sparse_module(cm)
    linears = [m for m in int8.modules() if isinstance(m, SparseCodebookLinear)]
    assert len(linears) == 3
    x = torch.from_numpy(rng.random((1, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        got, expected = int8(x), fp32(x)
    assert all(m.format is Format.INT8 for m in linears)  # recorded on every layer once it has run
    assert not torch.equal(got, expected)  # int8 rounding shows...
    assert float((got - expected).abs().max()) <= 0.02 * float(expected.abs().max())  # ...but stays small
    with pytest.raises(ConfigError, match=r"format: expected one of"):
        to_sparse_module(cm, format="int4")
