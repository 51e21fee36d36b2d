"""Constants and limits of the ``.dcz`` file format (see docs/FORMAT.md for the byte-level spec).

The reader checks every size against these limits, and against the file's real length, before it
allocates anything, so a hostile or corrupt file cannot make it reserve unbounded memory.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from deepcompress.errors import FormatError

MAGIC = b"DCZ\x00"
VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 2 adds optional header fields only (layer kinds beyond ``V1_KINDS``, an extra's ``dtype``,
``tied``, ``arch``, ``attachments``); the byte layout is unchanged (an attachment is one more
checksummed unit after the extras, described by its header entry). The writer writes version 1 whenever a file uses
none of them, so readers of version 1 keep reading every file they could read before."""
V1_KINDS = ("linear", "conv2d")
SUFFIX = ".dcz"

PREAMBLE = struct.Struct("<4sHHII")
"""magic, version (u16), flags (u16), stored header length (u32), CRC-32 of bytes 0-11 + header (u32)."""
CRC_COVERED_PREAMBLE = 12
"""The header CRC also covers the preamble's first 12 bytes, so a flipped flag bit is caught too."""

FLAG_DEFLATED = 1
"""Flags bit 0: the header is raw deflate (RFC 1951); the writer always sets it."""
KNOWN_FLAGS = FLAG_DEFLATED
DEFLATE_LEVEL = 9
DEFLATE_WBITS = -15
"""Raw deflate: no zlib wrapper, whose Adler-32 would repeat the CRC-32 the preamble already holds."""
HEADER_ZDICT = (
    b'{"model":"lenet5","model":"alexnet","model":"vgg16","model":"lenet300","meta":{"dataset":"fashion",'
    b'"dataset":"mnist","normalization":[0.1307,0.3081],"reference_accuracy":0.9,"quantized_accuracy":0.9,'
    b'"source":".safetensors"},"layers":[{"name":"conv1","kind":"conv2d","shape":[],'
    b'"attrs":{"stride":[1,1],"padding":[0,0],"dilation":[1,1],"groups":1},"wbits":8,"ibits":5,"nnz":,"k":256,'
    b'"cb":"f4","bias":"f2","index":{"coder":"huffman","count":,"bytes":},"codes":{"coder":"raw","bytes":}},'
    b'{"name":"fc1","kind":"linear","shape":[],"wbits":4,"ibits":4,"nnz":,"k":16,"cb":"f2","bias":"f4",'
    b'"index":{"coder":"rans","count":,"bytes":},"codes":{"coder":"rans","bytes":}}],"extras":[{"name":"'
)
"""Preset deflate dictionary (RFC 1950 "FDICT", here for raw deflate): typical header text, so that
a small header's keys cost back-references instead of literals. Part of format version 1: changing
it makes every existing file unreadable."""

CRC = struct.Struct("<I")
"""The CRC-32 (zlib) that follows each layer's and each extra's bytes."""

FLOAT_DTYPES = {"f4": "<f4", "f2": "<f2"}
"""Stored float dtypes of codebooks, biases: float32 or float16 (only when exact)."""
EXTRA_DTYPES = {"f4": "<f4", "f2": "<f2", "f8": "<f8", "i8": "<i8", "i4": "<i4", "i2": "<i2", "i1": "i1", "u1": "u1", "b1": "?"}
"""Stored dtypes of extra tensors (version 2; a version-1 extra, with no ``dtype`` field, is ``f4``):
every extra is stored exactly in its own dtype; the reader widens ``f2`` to float32, as for codebooks."""
EXTRA_DTYPE_OF = {"float32": "f4", "float64": "f8", "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1", "uint8": "u1", "bool": "b1", "float16": "f2"}
"""numpy dtype name of an extra -> its stored dtype."""
BIAS_DTYPE_CODES = {"float32": "f4", "float16": "f2", "codebook": "q"}
"""``CompressedLayer.bias_dtype`` -> the header's ``bias`` value. ``"q"`` (version 2): the bias's ``bk``
distinct values as float16, then each bias's index into them in ``bias_code_bits(bk)`` bits, packed
least significant bit first and padded to a whole byte; at most ``compressed.MAX_BIAS_VALUES`` values."""


def bias_code_bits(distinct: int) -> int:
    """Bits per index of a ``"q"`` bias with ``distinct`` values (0 when there is one: nothing to store)."""
    return max(0, (distinct - 1).bit_length())


def bias_bytes(distinct: int, count: int) -> int:
    """Bytes of a ``"q"`` bias section: ``distinct`` float16 values and ``count`` packed indices."""
    return 2 * distinct + (count * bias_code_bits(distinct) + 7) // 8

MAX_HEADER_BYTES = 4 * 2**20
"""Largest header, stored or inflated (a deflate bomb stops here); json then needs a few tens of MiB at most."""
MAX_LAYERS = 4096
MAX_EXTRAS = 65536
MAX_ATTACHMENTS = 256
MAX_ATTACHMENT_BYTES = 256 * 2**20
"""Largest attachment once inflated (a deflate bomb stops here)."""
MAX_NDIM = 8
MAX_TENSOR_ELEMENTS = 2**31
"""Largest dense weight or extra tensor; VGG-16's fc6 (103M weights) is well below it."""
MAX_TOTAL_SYMBOLS = 2**31
"""Largest sum of stream lengths over the file: a format limit that no ``max_elements`` lifts."""

SYMBOLS_PER_BYTE = 64
"""Decode budget: stream symbols (index plus codes, all layers) a file may declare per byte of its
own size. A rANS or raw stream of one repeated symbol declares any count in 1-3 bytes, and decoding
costs 16-28 bytes per symbol, so without this a 100-byte file could ask for 48 GB. Measured: the
committed files declare at most 11.44 symbols per byte (ResNet-18 at 2% kept), the VGG-16 and AlexNet scale runs 1.76 and
1.97; an unpruned layer with 1-bit codes 16; ``ibits`` 1 at 2% density (rANS) 50 (docs/SECURITY.md)."""
MIN_SYMBOL_BUDGET = 2**22
"""Floor of the symbol budget (4,194,304 symbols, at most ~120 MB to decode): a file declaring no
more is never refused for its ratio (an unpruned one-code layer costs 2-6 stream bytes at any size)."""
DEFAULT_MAX_ELEMENTS = 2**28
"""Default limit on the dense weight elements the layers declare (268,435,456: 1 GiB of float32 once
the caller densifies them). A layer with ``nnz`` 0 is a few bytes for any shape, yet ``dense_weight()``
allocates all of it. VGG-16 (138M) fits; a caller raises it with ``max_elements=``."""


def layer_parts(has_bias: bool) -> list[str]:
    """A layer's sections in file order (its CRC-32 follows the last)."""
    return ["codebook"] + (["bias"] if has_bias else []) + ["index", "codes"]


EXTRA_PARTS = ["data"]
"""An extra tensor's one section (its CRC-32 follows)."""
ATTACHMENT_PARTS = ["data"]
"""An attachment's one section: its bytes, verbatim (its CRC-32 follows)."""
CRC_PART = "crc32"


def layer_unit(layer: str) -> str:
    """Name of the checksummed unit holding all of a layer's sections."""
    return f"layer {layer}"


def extra_unit(name: str) -> str:
    """Name of the checksummed unit holding an extras tensor."""
    return f"extra {name}"


def attachment_unit(name: str) -> str:
    """Name of the checksummed unit holding a named byte blob (version 2)."""
    return f"attachment {name}"


def section_name(unit: str, part: str) -> str:
    """``"layer fc1 codes"``, ``"extra s data"``, ``"layer fc1 crc32"``: unique for unique unit names,
    since no part name ends with another."""
    return f"{unit} {part}"


def check_max_elements(max_elements: int | None) -> int | None:
    """``max_elements`` itself, checked to be ``None`` or a non-negative int (before any byte is read)."""
    if max_elements is not None and (isinstance(max_elements, bool) or not isinstance(max_elements, int)):
        raise TypeError(f"expected max_elements as an int or None, got {type(max_elements).__name__}")
    if max_elements is not None and max_elements < 0:
        raise ValueError(f"expected max_elements >= 0, got {max_elements}")
    return max_elements


def symbol_budget(file_bytes: int, max_elements: int | None = None) -> int:
    """Most stream symbols a ``file_bytes``-byte file may declare: ``SYMBOLS_PER_BYTE`` per byte, at
    least ``MIN_SYMBOL_BUDGET``, and at least ``max_elements`` when the caller passes one."""
    return max(MIN_SYMBOL_BUDGET, SYMBOLS_PER_BYTE * file_bytes, max_elements or 0)


def element_budget(max_elements: int | None = None) -> int:
    """Most dense weight elements the layers may declare: ``max_elements``, else the default."""
    return DEFAULT_MAX_ELEMENTS if max_elements is None else max_elements


def declared_elements(layers: list[dict[str, Any]]) -> tuple[int, int]:
    """(stream symbols, dense weight elements) that validated layer entries declare; the decoders
    allocate an array per stream of its count, the caller's ``dense_weight()`` one of ``prod(shape)``."""
    symbols = sum(entry["index"]["count"] + entry["nnz"] for entry in layers)
    return symbols, sum(math.prod(entry["shape"]) for entry in layers)


def check_decode_budget(layers: list[dict[str, Any]], file_bytes: int, max_elements: int | None = None) -> None:
    """Refuse, from the header alone, a file that declares more than its decode budget.

    The FormatError names the limit hit, the declared and allowed figures, and the ``max_elements``
    that would let this file through (one value raises both limits).
    """
    symbols, dense = declared_elements(layers)
    fix = f"if you trust the file, raise the limit: load_compressed(path, max_elements={max(symbols, dense)})"
    allowed = symbol_budget(file_bytes, max_elements)
    if symbols > allowed:
        given = ", max_elements" if max_elements else ""
        raise FormatError(
            f"decode budget: the layers declare {symbols} stream symbols, over the {allowed} allowed for a "
            f"{file_bytes}-byte file (max({MIN_SYMBOL_BUDGET}, {SYMBOLS_PER_BYTE} per byte{given})); {fix}",
            section="header",
            offset=PREAMBLE.size,
        )
    allowed = element_budget(max_elements)
    if dense > allowed:
        default = " (the default)" if max_elements is None else ""
        raise FormatError(
            f"decode budget: the layers declare {dense} dense weight elements, over max_elements={allowed}{default}; {fix}",
            section="header",
            offset=PREAMBLE.size,
        )
