"""Per-layer accounting of a ``.dcz`` file in the columns of the paper's Tables 2-5.

Every figure comes from the file's real section lengths; the per-layer bytes plus the header plus the
extras plus the attachments add up exactly to the file size.
"""

from __future__ import annotations

import math
import os
from typing import Any

from deepcompress.format import spec
from deepcompress.format.reader import Layout, parse_layout


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def _bits(num_bits: float, nnz: int) -> float:
    return num_bits / nnz if nnz else 0.0


def inspect_bytes(data: bytes) -> dict[str, Any]:
    """The report of :func:`inspect_file` for a file's bytes (``file_bytes`` = ``len(data)``)."""
    layout = parse_layout(data, max_elements=spec.MAX_TOTAL_SYMBOLS)  # sizes only: nothing is decoded
    rows = []
    for entry in layout.header["layers"]:
        unit = spec.layer_unit(entry["name"])
        sizes = {p: layout.sections[spec.section_name(unit, p)].length for p in spec.layer_parts("bias" in entry)}
        codebook, index, codes = sizes["codebook"], sizes["index"], sizes["codes"]
        bias, crc = sizes.get("bias", 0), layout.sections[spec.section_name(unit, spec.CRC_PART)].length
        numel, nnz = math.prod(entry["shape"]), entry["nnz"]
        n_index = entry["index"]["count"]
        pq_bytes = (n_index * entry["ibits"] + nnz * entry["wbits"]) / 8 + codebook
        rows.append(
            {
                "name": entry["name"],
                "kind": entry["kind"],
                "weights": numel,
                "nnz": nnz,
                "kept_pct": _pct(nnz, numel),
                "weight_bits_pq": entry["wbits"],
                "weight_bits_pqh": _bits(8 * codes, nnz),
                "index_bits_pq": entry["ibits"],
                "index_bits_pqh": _bits(8 * index, nnz),
                "rate_pq_pct": _pct(pq_bytes, 4 * numel),
                "rate_pqh_pct": _pct(codebook + index + codes, 4 * numel),
                "fillers": n_index - nnz,
                "coder": {"index": entry["index"]["coder"], "codes": entry["codes"]["coder"]},
                "pq_bytes": pq_bytes,
                "bytes": codebook + bias + index + codes + crc,
                "section_bytes": {"codebook": codebook, "bias": bias, "index": index, "codes": codes, "crc32": crc},
                "dense_bias_bytes": 4 * entry["shape"][0] if "bias" in entry else 0,
            }
        )
    extras = [_extra_row(layout, e) for e in layout.header.get("extras", [])]
    extras_bytes = sum(e["bytes"] for e in extras)
    attachments = [_attachment_row(layout, a) for a in layout.header.get("attachments", [])]
    extras_dense = sum(e["dense_bytes"] for e in extras)
    dense_weights = 4 * sum(r["weights"] for r in rows)
    dense_bytes = dense_weights + sum(r.pop("dense_bias_bytes") for r in rows) + extras_dense
    nnz = sum(r["nnz"] for r in rows)
    coded = sum(r["section_bytes"]["codebook"] + r["section_bytes"]["index"] + r["section_bytes"]["codes"] for r in rows)
    total = {
        "weights": dense_weights // 4,
        "nnz": nnz,
        "kept_pct": _pct(nnz, dense_weights // 4),
        "weight_bits_pq": _bits(sum(r["nnz"] * r["weight_bits_pq"] for r in rows), nnz),
        "weight_bits_pqh": _bits(8 * sum(r["section_bytes"]["codes"] for r in rows), nnz),
        "index_bits_pq": _bits(sum(r["nnz"] * r["index_bits_pq"] for r in rows), nnz),
        "index_bits_pqh": _bits(8 * sum(r["section_bytes"]["index"] for r in rows), nnz),
        "rate_pq_pct": _pct(sum(r["pq_bytes"] for r in rows), dense_weights),
        "rate_pqh_pct": _pct(coded, dense_weights),
        "fillers": sum(r["fillers"] for r in rows),
    }
    return {
        "model_name": layout.header["model"],
        "file_bytes": layout.file_bytes,
        "dense_bytes": dense_bytes,
        "ratio": dense_bytes / layout.file_bytes,
        "header_bytes": layout.header_bytes,
        "extras_bytes": extras_bytes,
        "extras": extras,
        "attachments_bytes": sum(a["bytes"] for a in attachments),
        "attachments": attachments,
        "layers": rows,
        "total": total,
    }


def _extra_row(layout: Layout, entry: dict[str, Any]) -> dict[str, Any]:
    """An uncompressed tensor: name, shape, stored dtype, its bytes in the file (CRC-32 included) and
    dense (floating point at fp32, integers and bools at their width, as ``CompressedModel.dense_bytes``)."""
    unit = spec.extra_unit(entry["name"])
    dtype = entry.get("dtype", "f4")
    elements = math.prod(entry["shape"])
    return {
        "name": entry["name"],
        "shape": entry["shape"],
        "dtype": dtype,
        "bytes": sum(layout.sections[spec.section_name(unit, p)].length for p in (*spec.EXTRA_PARTS, spec.CRC_PART)),
        "dense_bytes": elements * (4 if dtype.startswith("f") else int(dtype[1])),
    }


def _attachment_row(layout: Layout, entry: dict[str, Any]) -> dict[str, Any]:
    """A named byte blob: its name, its length, whether it is stored deflated, and its bytes in the file
    (CRC-32 included)."""
    unit = spec.attachment_unit(entry["name"])
    parts = (*spec.ATTACHMENT_PARTS, spec.CRC_PART)
    return {"name": entry["name"], "length": entry.get("inflated", entry["bytes"]), "deflated": "inflated" in entry,
            "bytes": sum(layout.sections[spec.section_name(unit, p)].length for p in parts)}


def inspect_file(path: "str | os.PathLike[str]") -> dict[str, Any]:
    """Sizes of a ``.dcz`` file, per layer as in the paper's Tables 2-5 (see :func:`inspect_bytes`).

    Keys: ``file_bytes`` (``os.path.getsize``), ``dense_bytes`` (fp32 weights + biases + extras),
    ``ratio``, ``header_bytes``, ``extras_bytes``, ``layers`` (one dict per layer: ``weights``,
    ``kept_pct``, ``weight_bits_pq``/``_pqh``, ``index_bits_pq``/``_pqh``, ``rate_pq_pct``/``_pqh_pct``
    -- size as % of the layer's dense fp32 weights, codebook and fillers included, bias excluded as in
    the paper --, ``fillers``, ``coder``, ``bytes`` (all of the layer's bytes, CRC-32 included),
    ``section_bytes``), ``attachments`` (name, ``length``, ``bytes`` with CRC-32), ``attachments_bytes``
    and ``total``. Attachments count in ``file_bytes``, never in ``dense_bytes``. ``header_bytes`` is the preamble plus the deflated header.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    report = inspect_bytes(data)
    report["file_bytes"] = os.path.getsize(path)
    report["ratio"] = report["dense_bytes"] / report["file_bytes"]
    return report
