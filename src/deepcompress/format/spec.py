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
"""magic, version (u16), flags (u16, must be 0), header length (u32), CRC-32 of the header (u32)."""

MAX_HEADER_BYTES = 16 * 2**20
MAX_LAYERS = 4096
MAX_EXTRAS = 65536
MAX_NDIM = 8
MAX_TENSOR_ELEMENTS = 2**31
"""Largest dense weight or extra tensor; VGG-16's fc6 (103M weights) is well below it."""
MAX_TOTAL_SYMBOLS = 2**32
"""Largest sum of stream lengths over the file (bounds the decoders' output allocations)."""
MAX_CODEBOOK = 2**16


def section_names(layer: str, has_bias: bool) -> list[str]:
    """Names of a layer's sections, in file order."""
    names = [f"layer {layer} codebook"]
    if has_bias:
        names.append(f"layer {layer} bias")
    return names + [f"layer {layer} index", f"layer {layer} codes"]


def extra_section_name(name: str) -> str:
    """Name of an extras tensor's section."""
    return f"extra {name}"
