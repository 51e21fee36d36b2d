"""More in-memory layouts for batch-1 products, besides the packed CSR of :mod:`.packed`.

They are built from a :class:`PackedCodebookCSR` at load time and read by the C extension's kernels
(``_simd.c``); which layout a layer runs on is chosen by measurement (:mod:`.plan`).

* :class:`SlicedCodebook` removes the gathers that bound the CSR kernel. Rows are taken 16 at a time
  (one per SIMD lane) and columns 63 at a time (a "slab", whose inputs fit in four zmm registers
  with a 64th lane holding 0.0), or 31 at a time (two registers). Within a (group, slab) cell, vector ``k`` holds the ``k``-th nonzero
  of each of the 16 rows; rows with fewer nonzeros in that cell get padding lanes, which point at the
  zero lane and so add nothing without a test. Each 16-bit word is ``column_in_slab << code_field |
  code`` with a 5-bit code field (codebooks of <= 32 entries, the paper's fc setting) or a 6-bit one
  (<= 64). The input is fetched from registers with ``vpermt2ps`` and 16 rows accumulate in one
  register, so nothing is gathered and nothing reduced horizontally. Padding costs bytes and time:
  the cell takes as many vectors as its fullest row.
* :class:`DenseCodes` stores every weight's code, a zero weight as one extra code that decodes to
  0.0 (paper section 3's codebook plus a zero entry): 4 bits per weight when the codebook has <= 15
  entries, else 8. Above roughly 20-25% density this reads fewer bytes than any index format (a
  sparse word is 2 bytes per nonzero) and the inputs are read contiguously.
* :class:`Int8Codes` (opt-in, lossy) is dense byte codes again, but the codebook is rounded to int8
  with one scale per layer and the kernel rounds the input to int8 per block of 64 (``int8_spmv`` in
  ``_simd.c``): the products run as int8 dot products (AVX-512 VNNI), about twice the fp32 dense
  kernel's multiply-adds per cycle, at the cost of a bounded error (tests/test_runtime_int8.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepcompress.runtime.packed import PackedCodebookCSR

SLAB = 63  # columns per sliced cell (four registers of inputs; the 64th lane is the kernel's zero lane)
NARROW_SLAB = 31  # or two registers (the 32nd lane is the zero lane)
GROUP = 16


@dataclass(frozen=True)
class SlicedCodebook:
    """A ``(rows, cols)`` matrix in 16-row x ``slab``-column cells (see the module docstring).

    Within a row group the non-empty cells are stored in order of their vector count, not of their
    columns: the kernel loops over a cell's vectors, and a loop whose trip count changes at random from
    one cell to the next has its exit mispredicted about once per cell (~15-20 cycles; at 4% density a
    cell holds ~6 vectors of ~3 cycles each). Sorted, the count changes a few times per group (warm,
    one thread: VGG-16 fc6 860 -> 560-610 us, AlexNet fc6 400 -> 295-305; smaller layers, whose
    branch pattern the predictor learns when a layer is called again and again, lose 3-7%: VGG-16 fc7
    67-70 -> 72-75 us). Each cell names its slab; empty cells are not stored.

    Attributes:
        rows, cols: the matrix shape.
        wide: whether codes take 6 bits (codebooks of 33-64 entries) instead of 5.
        slab: columns per cell, 63 (the inputs in four registers) or 31 (in two: one register lookup
            per weight instead of two and a blend, but more vectors; it pays on dense-ish layers).
        n_slabs: ``ceil(cols / slab)``.
        gptr: ``groups + 1`` int64 offsets (in 16-word vectors) of each row group's first vector.
        cptr: ``groups + 1`` int64 offsets of each row group's first cell in ``slabs`` / ``counts``.
        slabs: uint16, per stored cell its slab (its first column is ``slab_index * slab``).
        counts: uint8, per stored cell its vectors (1-64).
        words: uint16, 16 per vector, lane ``i`` for row ``16 * group + i``.
        codebook: float32 centroids zero-padded to 64.
    """

    rows: int
    cols: int
    wide: bool
    slab: int
    n_slabs: int
    gptr: np.ndarray
    cptr: np.ndarray
    slabs: np.ndarray
    counts: np.ndarray
    words: np.ndarray
    codebook: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads for the weights: words, cells, group offsets and the codebook."""
        return int(sum(a.nbytes for a in (self.words, self.slabs, self.counts, self.gptr, self.cptr, self.codebook)))

    @property
    def padding(self) -> float:
        """Fraction of the words that are padding lanes."""
        return float(np.count_nonzero(self.words == self.pad_word) / max(self.words.size, 1))

    @property
    def pad_word(self) -> int:
        """The word of a padding lane: the slab's zero column (the one past its last), code 0."""
        return self.slab << (6 if self.wide else 5)

    @classmethod
    def accepts(cls, packed: PackedCodebookCSR, slab: int = SLAB) -> bool:
        """Whether ``packed``'s codebook fits (<= 64 entries) and its slabs a uint16."""
        return packed.code_bits <= 6 and -(-packed.cols // slab) <= 1 << 16

    @classmethod
    def from_packed(cls, packed: PackedCodebookCSR, slab: int = SLAB) -> "SlicedCodebook":
        """Re-lay ``packed`` in cells of ``slab`` (63 or 31) columns; raises ``ValueError`` where
        :meth:`accepts` does not."""
        if slab not in (SLAB, NARROW_SLAB):
            raise ValueError(f"expected a slab of {SLAB} or {NARROW_SLAB} columns, got {slab}")
        if not cls.accepts(packed, slab):
            raise ValueError(
                f"the sliced layout takes codebooks of <= 64 entries (6 bits) and <= {slab << 16} columns, got "
                f"{packed.code_bits} bits and {packed.cols} columns; use the 'csr' or 'dense' format"
            )
        rows, cols = packed.rows, packed.cols
        wide = packed.code_bits == 6
        field = 6 if wide else 5
        groups = -(-rows // GROUP)
        n_slabs = max(1, -(-cols // slab))
        row, col, code = packed.coo()
        cell = (row // GROUP) * n_slabs + col // slab
        lane_key = cell * GROUP + (row % GROUP)  # (cell, lane); within a key, columns stay ascending
        order = np.argsort(lane_key, kind="stable")
        per_lane = np.bincount(lane_key, minlength=groups * n_slabs * GROUP)
        vectors = per_lane.reshape(-1, GROUP).max(axis=1)  # per cell: its fullest row
        stored = np.flatnonzero(vectors)  # cell ids, group-major
        stored = stored[np.lexsort((stored, vectors[stored], stored // n_slabs))]  # by group, then count
        position = np.empty(vectors.size, dtype=np.int64)
        position[stored] = np.arange(stored.size)
        cell_start = np.zeros(stored.size + 1, dtype=np.int64)
        np.cumsum(vectors[stored], out=cell_start[1:])
        key_start = np.zeros(per_lane.size + 1, dtype=np.int64)
        np.cumsum(per_lane, out=key_start[1:])
        sorted_key = lane_key[order]
        rank = np.arange(sorted_key.size, dtype=np.int64) - key_start[sorted_key]
        slot = (cell_start[position[sorted_key // GROUP]] + rank) * GROUP + sorted_key % GROUP
        words = np.full(int(cell_start[-1]) * GROUP, slab << field, dtype=np.uint16)
        words[slot] = ((col[order] % slab) << field) | code[order]
        cptr = np.searchsorted(stored // n_slabs, np.arange(groups + 1)).astype(np.int64)
        codebook = np.zeros(64, dtype=np.float32)
        codebook[: packed.codebook.size] = packed.codebook[:64]
        return cls(rows, cols, wide, slab, n_slabs, cell_start[cptr], cptr, (stored % n_slabs).astype(np.uint16),
                   vectors[stored].astype(np.uint8), words, codebook)


class _ByteCodes:
    """What :class:`DenseCodes` and :class:`Int8Codes` share: every weight's code in a byte (or nibble)
    matrix ``codes`` looked up in ``table``, with one more code for a pruned weight."""

    codes: np.ndarray
    table: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads for the weights: the codes and the table."""
        return int(self.codes.nbytes + self.table.nbytes)

    @classmethod
    def accepts(cls, packed: PackedCodebookCSR) -> bool:
        """Whether the codes in use plus a zero code fit a byte."""
        return _codes_used(packed) <= 255


@dataclass(frozen=True)
class DenseCodes(_ByteCodes):
    """Every weight's code, ``zero_code`` (= the codebook size) where the weight is pruned.

    Attributes:
        rows, cols: the matrix shape.
        nibble: 4-bit codes (two per byte; in each 32-weight chunk byte ``i`` holds weight ``i`` in its
            low nibble and ``16 + i`` in its high one), else one byte per code.
        stride: bytes per row.
        codes: uint8 ``(rows, stride)``.
        table: float32 codebook with 0.0 at ``zero_code``, zero-padded to at least 64 entries.
        table_size: ``codebook size + 1``.
    """

    rows: int
    cols: int
    nibble: bool
    stride: int
    codes: np.ndarray
    table: np.ndarray
    table_size: int

    @classmethod
    def dense_bytes(cls, packed: PackedCodebookCSR) -> int:
        """The bytes of ``packed``'s codes in this layout (to skip it where it cannot pay)."""
        nibble = _codes_used(packed) + 1 <= 16
        return packed.rows * (-(-packed.cols // 32) * 16 if nibble else packed.cols)

    @classmethod
    def from_packed(cls, packed: PackedCodebookCSR) -> "DenseCodes":
        """Re-lay ``packed``; raises ``ValueError`` when the codebook plus a zero code exceeds 256."""
        used = _codes_used(packed)
        nibble = used + 1 <= 16
        rows, cols = packed.rows, packed.cols
        padded = -(-cols // 32) * 32 if nibble else cols
        full = _byte_codes(packed, padded, "dense codes")
        if nibble:
            chunks = full.reshape(rows, padded // 32, 2, 16)
            codes = (chunks[:, :, 0, :] | (chunks[:, :, 1, :] << 4)).reshape(rows, padded // 2)
        else:
            codes = full
        table = np.zeros(max(64, used + 1), dtype=np.float32)
        table[:used] = packed.codebook[:used]
        return cls(rows, cols, nibble, int(codes.shape[1]), np.ascontiguousarray(codes), table, used + 1)


INT8_BLOCK = 64  # inputs per activation scale (one zmm register of int8)
INT8_MAX = 127  # symmetric range of the quantized weights and inputs: [-127, 127]


@dataclass(frozen=True)
class Int8Codes(_ByteCodes):
    """Every weight's byte code, ``zero_code`` (= the codebook size) where the weight is pruned, and the
    codebook rounded to int8: weight ``w ~= scale * table[code]``.

    The scale is ``max|codebook| / 127`` (symmetric, so 0.0 stays exactly 0 and a pruned weight adds
    nothing); each weight is then off by at most ``scale / 2``. Rows are padded with the zero code to a
    multiple of 64 columns, so the kernel reads whole 64-byte blocks with no tail; the input is rounded
    per 64-column block at call time, by the kernel.

    Attributes:
        rows, cols: the matrix shape.
        stride: bytes per row, ``cols`` rounded up to a multiple of 64.
        codes: uint8 ``(rows, stride)``.
        table: int8 ``(256,)``, the rounded codebook with 0 at ``zero_code`` and past it.
        table_size: ``codebook size + 1`` (the kernel looks up in 64, 128 or 256 entries).
        scale: the weight scale (a float32 value).
    """

    rows: int
    cols: int
    stride: int
    codes: np.ndarray
    table: np.ndarray
    table_size: int
    scale: float

    @classmethod
    def from_packed(cls, packed: PackedCodebookCSR) -> "Int8Codes":
        """Re-lay and round ``packed``; raises ``ValueError`` when the codebook plus a zero code exceeds 256."""
        used = _codes_used(packed)
        rows, cols = packed.rows, packed.cols
        stride = -(-cols // INT8_BLOCK) * INT8_BLOCK
        codes = _byte_codes(packed, stride, "int8 codes")
        values = packed.codebook[:used].astype(np.float64)
        peak = np.float32(np.abs(values).max()) if used else np.float32(0.0)
        scale = peak / np.float32(INT8_MAX)
        table = np.zeros(256, dtype=np.int8)
        if scale > 0:
            table[:used] = np.clip(np.rint(values / np.float64(scale)), -INT8_MAX, INT8_MAX).astype(np.int8)
        return cls(rows, cols, stride, codes, table, used + 1, float(scale))

    def dequantized(self) -> np.ndarray:
        """The float32 ``(rows, cols)`` weight the kernel multiplies by (``scale * table[code]``)."""
        return (self.table[self.codes[:, : self.cols]].astype(np.float32) * np.float32(self.scale))


def _byte_codes(packed: PackedCodebookCSR, width: int, layout: str) -> np.ndarray:
    """uint8 ``(rows, width)``: every stored weight's code at its column, the zero code (the number of
    codes in use) everywhere else, padding columns included. Raises ``ValueError`` naming ``layout``
    when the codes in use plus that zero code do not fit a byte."""
    used = _codes_used(packed)
    if used > 255:
        raise ValueError(f"{layout} take codebooks of <= 255 entries, got {used}; use the 'csr' format")
    codes = np.full((packed.rows, width), used, dtype=np.uint8)
    row, col, code = packed.coo()
    codes[row, col] = code.astype(np.uint8)
    return codes


def _codes_used(packed: PackedCodebookCSR) -> int:
    """``1 + the largest code stored`` (the packed codebook is zero-padded to ``2**code_bits``)."""
    if packed.nnz == 0:
        return 0
    return int((packed.words & packed.words.dtype.type((1 << packed.code_bits) - 1)).max()) + 1
