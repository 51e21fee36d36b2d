"""Constants and limits of the ``.dcz`` file format (see docs/FORMAT.md for the byte-level spec).

The reader checks every size against these limits, and against the file's real length, before it
allocates anything, so a hostile or corrupt file cannot make it reserve unbounded memory.
"""

from __future__ import annotations

import struct

MAGIC = b"DCZ\x00"
VERSION = 1
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
BIAS_DTYPE_CODES = {"float32": "f4", "float16": "f2"}
"""``CompressedLayer.bias_dtype`` -> the header's ``bias`` value."""

MAX_HEADER_BYTES = 4 * 2**20
"""Largest header, stored or inflated (a deflate bomb stops here); json then needs a few tens of MiB at most."""
MAX_LAYERS = 4096
MAX_EXTRAS = 65536
MAX_NDIM = 8
MAX_TENSOR_ELEMENTS = 2**31
"""Largest dense weight or extra tensor; VGG-16's fc6 (103M weights) is well below it."""
MAX_TOTAL_SYMBOLS = 2**31
"""Largest sum of stream lengths over the file (bounds the decoders' output allocations)."""


def layer_parts(has_bias: bool) -> list[str]:
    """A layer's sections in file order (its CRC-32 follows the last)."""
    return ["codebook"] + (["bias"] if has_bias else []) + ["index", "codes"]


EXTRA_PARTS = ["data"]
"""An extra tensor's one section (its CRC-32 follows)."""
CRC_PART = "crc32"


def layer_unit(layer: str) -> str:
    """Name of the checksummed unit holding all of a layer's sections."""
    return f"layer {layer}"


def extra_unit(name: str) -> str:
    """Name of the checksummed unit holding an extras tensor."""
    return f"extra {name}"


def section_name(unit: str, part: str) -> str:
    """``"layer fc1 codes"``, ``"extra s data"``, ``"layer fc1 crc32"``: unique for unique unit names,
    since no part name ends with another."""
    return f"{unit} {part}"
