"""Per-layer accounting of a ``.dcz`` file in the columns of the paper's Tables 2-5.

Every figure comes from the file's real section lengths; the per-layer bytes plus the header plus the
extras add up exactly to the file size.
"""

from __future__ import annotations

import math
import os
from typing import Any

from deepcompress.format import spec
from deepcompress.format.reader import parse_layout


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def _bits(num_bits: float, nnz: int) -> float:
    return num_bits / nnz if nnz else 0.0


def inspect_bytes(data: bytes) -> dict[str, Any]:
    """The report of :func:`inspect_file` for a file's bytes (``file_bytes`` = ``len(data)``)."""
    layout = parse_layout(data)
    sec = layout.sections
    rows = []
    for entry in layout.header["layers"]:
        names = spec.section_names(entry["name"], entry["has_bias"])
        codebook, index, codes = sec[names[0]].length, sec[names[-2]].length, sec[names[-1]].length
        bias = sec[names[1]].length if entry["has_bias"] else 0
        numel, nnz = math.prod(entry["shape"]), entry["nnz"]
        n_index = entry["index"]["count"]
        pq_bytes = (n_index * entry["index_bits"] + nnz * entry["weight_bits"]) / 8 + codebook
        rows.append(
            {
                "name": entry["name"],
                "kind": entry["kind"],
                "weights": numel,
                "nnz": nnz,
                "kept_pct": _pct(nnz, numel),
                "weight_bits_pq": entry["weight_bits"],
                "weight_bits_pqh": _bits(8 * codes, nnz),
                "index_bits_pq": entry["index_bits"],
                "index_bits_pqh": _bits(8 * index, nnz),
                "rate_pq_pct": _pct(pq_bytes, 4 * numel),
                "rate_pqh_pct": _pct(codebook + index + codes, 4 * numel),
                "fillers": n_index - nnz,
                "coder": {"index": entry["index"]["coder"], "codes": entry["codes"]["coder"]},
                "pq_bytes": pq_bytes,
                "bytes": codebook + bias + index + codes,
                "section_bytes": {"codebook": codebook, "bias": bias, "index": index, "codes": codes},
            }
        )
    extras_bytes = sum(sec[spec.extra_section_name(e["name"])].length for e in layout.header["extras"])
    dense_weights = 4 * sum(r["weights"] for r in rows)
    dense_bytes = dense_weights + 4 * sum(r["section_bytes"]["bias"] // 4 for r in rows) + extras_bytes
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
        "model_name": layout.header["model_name"],
        "file_bytes": layout.file_bytes,
        "dense_bytes": dense_bytes,
        "ratio": dense_bytes / layout.file_bytes,
        "header_bytes": layout.header_bytes,
        "extras_bytes": extras_bytes,
        "layers": rows,
        "total": total,
    }


def inspect_file(path: "str | os.PathLike[str]") -> dict[str, Any]:
    """Sizes of a ``.dcz`` file, per layer as in the paper's Tables 2-5 (see :func:`inspect_bytes`).

    Keys: ``file_bytes`` (``os.path.getsize``), ``dense_bytes`` (fp32 weights + biases + extras),
    ``ratio``, ``header_bytes``, ``extras_bytes``, ``layers`` (one dict per layer: ``weights``,
    ``kept_pct``, ``weight_bits_pq``/``_pqh``, ``index_bits_pq``/``_pqh``, ``rate_pq_pct``/``_pqh_pct``
    -- size as % of the layer's dense fp32 weights, codebook and fillers included, bias excluded as in
    the paper --, ``fillers``, ``coder``, ``bytes``) and ``total``.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    report = inspect_bytes(data)
    report["file_bytes"] = os.path.getsize(path)
    report["ratio"] = report["dense_bytes"] / report["file_bytes"]
    return report
