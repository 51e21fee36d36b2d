"""The batch-1 layouts (csr, sliced, dense codes) and sparse convolutions against F.linear / F.conv2d,
on shapes chosen to hit every edge: empty rows and slabs, all-zero layers, one dense row, row counts
around the 16-row group and column counts around the 64-column slab and the 16/32-wide vectors."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deepcompress.errors import ConfigError
from deepcompress.runtime import PackedCodebookCSR, SparseCodebookConv2d, SparseCodebookLinear, kernels, simd
from deepcompress.runtime.formats import NARROW_SLAB, SLAB, DenseCodes, SlicedCodebook
from deepcompress.runtime.plan import NARROW, SINGLE, Format, bind, candidates, layout_name
from test_runtime import random_layer, use_backend

needs_simd = pytest.mark.skipif(not kernels.HAVE_SIMD, reason="AVX-512 extension not built or CPU lacks AVX-512")
FORMATS = ["csr", "sliced", "dense"]


def awkward(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Empty rows, one full row, rows of 1..cols nonzeros, and whole empty 64-column slabs."""
    picks = []
    for r in range(rows):
        if r % 4 == 0:
            continue
        if r == 1:
            cs = np.arange(cols)
        elif r % 4 == 2:
            cs = np.sort(rng.choice(cols, size=1 + (r * 7) % cols, replace=False))
        else:
            cs = np.flatnonzero(rng.random(cols) < 0.3)
            cs = cs[(cs // 64) % 3 != 1]  # every second-of-three slab empty
        picks.append(r * cols + cs)
    return np.concatenate(picks) if picks else np.array([], dtype=np.int64)


def check(layer, fmt: str, rng: np.random.Generator, batch: int = 1) -> SparseCodebookLinear:
    module = SparseCodebookLinear.from_compressed(layer, dense_batch=None, backend="simd", format=fmt)
    assert module.format is Format(fmt)
    x = torch.from_numpy(rng.standard_normal((batch, layer.shape[1])).astype(np.float32))
    bias = None if layer.bias is None else torch.from_numpy(layer.bias)
    expected = F.linear(x, torch.from_numpy(layer.dense_weight()), bias)
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=2e-4, msg=f"{fmt} {layer.shape} batch {batch}")
    return module


@needs_simd
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", [1, 15, 16, 17, 33])
@pytest.mark.parametrize("cols", [1, 15, 31, 63, 64, 65, 130])
def test_formats_match_dense_on_awkward_shapes(fmt: str, rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows * 1000 + cols)
    layer = random_layer((rows, cols), 0, rng, positions=awkward(rows, cols, rng), bias=rows % 2 == 1)
    check(layer, fmt, rng)


@needs_simd
@pytest.mark.parametrize("slab", [SLAB, NARROW_SLAB])
@pytest.mark.parametrize("weight_bits", [5, 6])
@pytest.mark.parametrize("rows,cols", [(1, 1), (17, 30), (17, 31), (17, 32), (33, 62), (16, 63), (15, 64), (33, 130)])
def test_sliced_slab_widths_match_dense(slab: int, weight_bits: int, rows: int, cols: int) -> None:
    """Both slab widths (63 and 31 columns), both code fields, on shapes around the slab edges and with
    empty rows and empty slabs; on one thread and on the pool."""
    rng = np.random.default_rng(rows * 1000 + cols + slab)
    layer = random_layer((rows, cols), 0, rng, positions=awkward(rows, cols, rng), weight_bits=weight_bits)
    layout = SlicedCodebook.from_packed(PackedCodebookCSR.from_layer(layer), slab)
    assert layout.slab == slab and layout.n_slabs == -(-cols // slab)
    x = rng.standard_normal(cols).astype(np.float32)
    expected = layer.dense_weight() @ x + layer.bias
    for parallel in (False, True):
        out = np.full(rows, np.nan, dtype=np.float32)
        bind(Format.SLICED, layout, layer.bias, parallel)(x.ctypes.data, out.ctypes.data)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-4)


@needs_simd
def test_sliced_narrow_slab_is_timed_and_named() -> None:
    """A sliced layer times both slab widths and records which it kept (``sliced/31`` for 31 columns)."""
    rng = np.random.default_rng(14)
    module = SparseCodebookLinear.from_compressed(random_layer((40, 300), 0.25, rng), format="sliced")
    assert {"sliced", "sliced" + NARROW} <= set(module.format_us)
    name = layout_name(module.format, module._layout)
    assert name == ("sliced" + NARROW if module._layout.slab == NARROW_SLAB else "sliced")
    assert f"format={name}," in repr(module)
    with pytest.raises(ValueError, match="expected a slab of 63 or 31 columns, got 64"):
        SlicedCodebook.from_packed(module.packed, 64)


@needs_simd
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_formats_all_zero_layer(fmt: str, batch: int) -> None:
    rng = np.random.default_rng(3)
    layer = random_layer((21, 77), 0, rng, positions=np.array([], dtype=np.int64))
    check(layer, fmt, rng, batch)


@needs_simd
@pytest.mark.parametrize("weight_bits,fmt", [(2, "sliced"), (4, "sliced"), (6, "sliced"),
                                             (2, "dense"), (4, "dense"), (5, "dense"), (6, "dense"), (7, "dense")])
def test_codebook_widths(weight_bits: int, fmt: str) -> None:
    """Sliced: 5- and 6-bit code fields. Dense: 4-bit nibbles (<= 15 entries) and byte codes looked up
    in 16-, 32-, 64-entry registers or gathered (> 64)."""
    rng = np.random.default_rng(weight_bits)
    layer = random_layer((37, 333), 0.4, rng, weight_bits=weight_bits)
    module = check(layer, fmt, rng)
    if fmt == "dense":
        assert module._layout.nibble == (2**weight_bits + 1 <= 16)


@needs_simd
def test_sliced_layout_pads_to_the_fullest_row() -> None:
    """A cell (16 rows x 63 columns) takes as many vectors as its fullest row; the rest of its lanes are
    padding words that point at the slab's zero column. Empty cells are not stored."""
    rng = np.random.default_rng(5)
    # row 0 has 5 nonzeros in slab 0, row 3 one, the rest none; row 16 (group 1) 2 in slab 1 (columns 63-125)
    positions = np.array([0, 1, 2, 3, 4, 3 * 100 + 10, 16 * 100 + 63, 16 * 100 + 99])
    layer = random_layer((20, 100), 0, rng, positions=positions)
    sliced = SlicedCodebook.from_packed(PackedCodebookCSR.from_layer(layer))
    assert sliced.counts.tolist() == [5, 2] and sliced.slabs.tolist() == [0, 1] and sliced.cptr.tolist() == [0, 1, 2]
    assert sliced.gptr.tolist() == [0, 5, 7]
    pad = SLAB << 5
    assert sliced.slab == SLAB and sliced.pad_word == pad and sliced.words.size == 7 * 16
    assert np.count_nonzero(sliced.words == pad) == 7 * 16 - 8 and sliced.padding == (7 * 16 - 8) / (7 * 16)
    assert sliced.words[16 * 4] >> 5 == 4 and sliced.words[3] >> 5 == 10  # row 0's 5th, row 3's only word
    assert sliced.words[16 * 5] >> 5 == 0 and sliced.words[16 * 6] >> 5 == 99 - 63  # row 16, slab 1
    check(layer, "sliced", rng)


@needs_simd
def test_sliced_cells_of_a_group_are_stored_fewest_vectors_first() -> None:
    """Within a row group cells are ordered by vector count (ties by slab), each naming its slab, so the
    kernel's per-cell loop sees runs of equal trip counts."""
    rng = np.random.default_rng(11)
    # group 0: slab 0 holds 3 vectors (row 0), slab 1 one (row 0), slab 2 two (rows 0 and 5), slab 3 one (row 2)
    positions = np.sort(np.array([0, 1, 2, 63, 126, 127, 5 * 252 + 130, 2 * 252 + 200]))
    layer = random_layer((16, 252), 0, rng, positions=positions, bias=False)
    sliced = SlicedCodebook.from_packed(PackedCodebookCSR.from_layer(layer))
    assert sliced.slabs.tolist() == [1, 3, 2, 0] and sliced.counts.tolist() == [1, 1, 2, 3]
    assert sliced.words[0] >> 5 == 0 and sliced.words[16 + 2] >> 5 == 200 - 189  # slab 1's row 0, slab 3's row 2
    assert sliced.words[32] >> 5 == 0 and sliced.words[48] >> 5 == 1 and sliced.words[32 + 5] >> 5 == 130 - 126
    check(layer, "sliced", rng)


@needs_simd
def test_sliced_padding_adds_nothing_next_to_non_finite_inputs() -> None:
    """Padding lanes read the zero lane, not an input: an inf or NaN in a column a row does not store
    leaves that row finite (a sparse product skips pruned weights, where a dense one would give
    0 * inf = NaN), and one in a column it stores makes it infinite."""
    rng = np.random.default_rng(12)
    positions = np.array([0 * 70 + 5, 1 * 70 + 62, 2 * 70 + 63, 2 * 70 + 64])  # rows 0-2 use columns 5, 62, 63, 64
    layer = random_layer((3, 70), 0, rng, positions=positions, bias=False)
    module = SparseCodebookLinear.from_compressed(layer, backend="simd", format="sliced")
    x = torch.zeros(1, 70)
    x[0, 62] = float("inf")
    x[0, 0] = float("nan")
    y = module(x)[0]
    weight = layer.dense_weight()
    assert y[0] == 0.0 and y[2] == 0.0  # rows 0 and 2 store only columns whose input is 0
    assert torch.isinf(y[1]) and np.sign(y[1].item()) == np.sign(weight[1, 62])


@needs_simd
def test_dense_codes_nibble_order() -> None:
    """In a 32-weight chunk byte i holds weight i (low nibble) and weight 16 + i (high nibble)."""
    rng = np.random.default_rng(6)
    layer = random_layer((2, 40), 0, rng, weight_bits=3, positions=np.array([0, 17, 33, 40 + 39]))
    dense = DenseCodes.from_packed(PackedCodebookCSR.from_layer(layer))
    zero = dense.table_size - 1
    assert dense.nibble and dense.stride == 32 and dense.table[zero] == 0.0
    assert dense.codes[0, 0] & 15 == layer.codes[0] and dense.codes[0, 1] >> 4 == layer.codes[1]
    assert dense.codes[0, 2] & 15 == zero and dense.codes[0, 17] & 15 == layer.codes[2]


@needs_simd
def test_format_choice_recorded_and_honoured() -> None:
    rng = np.random.default_rng(7)
    layer = random_layer((64, 256), 0.3, rng)
    auto = SparseCodebookLinear.from_compressed(layer, format="auto")
    tried = [f.value for f in candidates(auto.packed, "auto")]
    tried += [f + NARROW for f in tried if f == "sliced"]  # the sliced layout is timed at both slab widths
    suffixes = ["", SINGLE] if simd.num_threads() > 1 else [""]
    chosen = layout_name(auto.format, auto._layout)
    assert set(auto.format_us) == {f + s for f in tried for s in suffixes} and chosen in tried
    best = min(auto.format_us, key=auto.format_us.get)
    assert best == chosen + ("" if auto.parallel else SINGLE)
    assert f"format={chosen}, threads={'pool' if auto.parallel else 1}" in repr(auto)
    for fmt, layout in (("csr", PackedCodebookCSR), ("sliced", SlicedCodebook), ("dense", DenseCodes)):
        module = SparseCodebookLinear.from_compressed(layer, format=fmt)
        names = {fmt, fmt + NARROW} if fmt == "sliced" else {fmt}
        timed = {n + s for n in names for s in suffixes}
        assert set(module.format_us) == (timed if len(timed) > 1 else set())  # one candidate: nothing to time
        assert isinstance(module._layout, layout) and layout_name(module.format, module._layout) in names
    sparse = random_layer((64, 4096), 0.04, rng)  # dense codes would read 8x the bytes: not tried
    assert Format.DENSE not in candidates(PackedCodebookCSR.from_layer(sparse), "auto")


@needs_simd
def test_format_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    wide = random_layer((8, 40), 0.5, rng, weight_bits=8)
    with pytest.raises(ConfigError, match=r"format 'sliced' takes codebooks of <= 64 entries, got 8 bits, and <= 4128768 columns"):
        SparseCodebookLinear.from_compressed(wide, format="sliced")
    with pytest.raises(ConfigError, match=r"format: expected one of \['auto', 'csr', 'sliced', 'dense', 'int8'\], got 'ell'"):
        SparseCodebookLinear.from_compressed(wide, format="ell")
    with pytest.raises(ConfigError, match="format 'dense' runs on the 'simd' backend only"):
        SparseCodebookLinear.from_compressed(wide, format="dense", backend="torch")
    assert Format.SLICED not in candidates(PackedCodebookCSR.from_layer(wide), "auto")


@needs_simd
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_rebind_their_own_arrays(how: str) -> None:
    """Kernels hold array addresses: a copy must run on its own arrays, not the original's."""
    rng = np.random.default_rng(9)
    layer = random_layer((40, 300), 0.2, rng)
    module = SparseCodebookLinear.from_compressed(layer, format="sliced")
    clone = copy.deepcopy(module) if how == "deepcopy" else pickle.loads(pickle.dumps(module))
    x = torch.from_numpy(rng.standard_normal((1, 300)).astype(np.float32))
    expected = module(x)
    del module
    assert clone.format is Format.SLICED
    torch.testing.assert_close(clone(x), expected)
    torch.testing.assert_close(clone(torch.cat([x, x])), torch.cat([expected, expected]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["simd", "numba", "torch"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "in_ch,out_ch,groups,kernel,stride,padding,dilation,size",
    [
        (3, 8, 1, 3, 1, 1, 1, (9, 11)),  # 3x3 'same'
        (6, 10, 1, 5, 2, 0, 1, (13, 12)),  # stride 2, no padding
        (8, 8, 8, 3, 1, 1, 1, (7, 7)),  # depthwise
        (8, 12, 4, 3, 2, 1, 1, (10, 9)),  # grouped, strided
        (16, 24, 1, 1, 1, 0, 1, (5, 6)),  # pointwise: no unfold at batch 1
        (4, 6, 2, 3, 1, 2, 2, (9, 9)),  # dilated, grouped
        (5, 70, 1, 3, 1, 1, 1, (20, 21)),  # 420 output pixels: 64-wide tiles and a tail
    ],
)
def test_sparse_conv_matches_conv2d(backend: str, batch: int, in_ch: int, out_ch: int, groups: int, kernel: int,
                                    stride: int, padding: int, dilation: int, size: tuple[int, int],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    use_backend(backend, monkeypatch)
    rng = np.random.default_rng(in_ch * out_ch + groups)
    layer = random_layer((out_ch, in_ch // groups, kernel, kernel), 0.4, rng, kind="conv2d", weight_bits=8, name="conv")
    module = SparseCodebookConv2d.from_compressed(layer, stride=(stride,) * 2, padding=(padding,) * 2,
                                                  dilation=(dilation,) * 2, backend=backend, groups=groups)
    x = torch.from_numpy(rng.standard_normal((batch, in_ch, *size)).astype(np.float32))
    expected = F.conv2d(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias), stride=stride,
                        padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)
    assert f"groups={groups}" in repr(module) or groups == 1


def test_conv_group_errors() -> None:
    rng = np.random.default_rng(10)
    layer = random_layer((6, 2, 3, 3), 0.5, rng, kind="conv2d", name="conv")
    with pytest.raises(ValueError, match="expected groups dividing 6 output channels, got 4"):
        SparseCodebookConv2d.from_compressed(layer, groups=4)


def test_without_extension_layers_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the extension reported absent a layer plans no format and runs on numba or torch."""
    monkeypatch.setattr(kernels, "HAVE_SIMD", False)
    monkeypatch.setattr(simd, "LIB", None)
    rng = np.random.default_rng(11)
    layer = random_layer((30, 100), 0.3, rng)
    module = SparseCodebookLinear.from_compressed(layer)
    assert module.format is None and "format=" not in repr(module)
    x = torch.from_numpy(rng.standard_normal((1, 100)).astype(np.float32))
    expected = F.linear(x, torch.from_numpy(layer.dense_weight()), torch.from_numpy(layer.bias))
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="format 'sliced' runs on the 'simd' backend only"):
        SparseCodebookLinear.from_compressed(layer, format="sliced")
