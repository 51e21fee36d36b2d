"""The paper's per-layer compression table (Tables 2-5) as plain text, from a real file's bytes."""

from __future__ import annotations

from typing import Any

_COLUMNS = (
    ("layer", "{name}"),
    ("#weights", "{weights}"),
    ("kept", "{kept_pct:.1f}%"),
    ("w bits P+Q", "{weight_bits_pq:.1f}"),
    ("w bits P+Q+H", "{weight_bits_pqh:.2f}"),
    ("idx bits P+Q", "{index_bits_pq:.1f}"),
    ("idx bits P+Q+H", "{index_bits_pqh:.2f}"),
    ("rate P+Q", "{rate_pq_pct:.2f}%"),
    ("rate P+Q+H", "{rate_pqh_pct:.2f}%"),
    ("fillers", "{fillers}"),
    ("coders (idx/w)", "{coders}"),
)


def _cells(row: dict[str, Any]) -> list[str]:
    coder = row.get("coder")
    values = dict(row, coders=f"{coder['index']}/{coder['codes']}" if coder else "")
    return [fmt.format(**values) for _, fmt in _COLUMNS]


def format_table(report: dict[str, Any]) -> str:
    """Render :func:`deepcompress.format.inspect_file`'s report as an aligned plain-text table.

    Rates are the compressed size as a percentage of the dense fp32 weights (codebook and filler
    overhead included, biases excluded, as in the paper); the footer gives the whole file's ratio.
    """
    rows = [[h for h, _ in _COLUMNS]] + [_cells(r) for r in report["layers"]]
    rows.append(_cells(dict(report["total"], name="total", coder=None)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]
    rule = "-" * max(len(line) for line in lines)
    lines.insert(1, rule)
    lines.insert(len(lines) - 1, rule)
    attached = f", attachments {report['attachments_bytes']}" if report.get("attachments_bytes") else ""
    lines.append(
        f"file {report['file_bytes']} bytes (header {report['header_bytes']}, extras {report['extras_bytes']}{attached}); "
        f"dense fp32 {report['dense_bytes']} bytes; ratio {report['ratio']:.1f}x"
    )
    return "\n".join(lines)
