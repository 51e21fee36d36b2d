"""Decode memory is bounded by the file's size and by ``max_elements`` (docs/SECURITY.md, issue 13.7).

A raw or rANS stream of one repeated symbol declares any count in 1-3 bytes, so the reader checks the
header's declared symbols against ``spec.symbol_budget(file bytes)`` and its dense elements against
``max_elements`` before decoding anything. The hostile files here are read in a child process whose
address space is capped, so a regression fails the test instead of exhausting the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deepcompress
from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import FormatError
from deepcompress.format import from_bytes, load_compressed, parse_layout, spec, to_bytes
from deepcompress.format.writer import assemble

ROOT = Path(__file__).parents[1]
COMMITTED = sorted(ROOT.glob("experiments/results/**/*.dcz")) + sorted((ROOT / "tests" / "golden").glob("*.dcz"))
CAP_BYTES = 1536 * 2**20
"""Address space the child may add to what it holds after its imports: far below the 8-16 GiB that
decoding 2**31 declared symbols would take."""
MEASURED_MAX_SYMBOLS_PER_BYTE = 11.45  # resnet18_fashion_s98.dcz: 2% kept, narrow index widths with many cheap fillers
"""The largest ratio among the committed files (docs/SECURITY.md quotes it)."""

# VGG-16's weight shapes: 13 convolutions and 3 fully connected layers, 138,344,128 weights.
_VGG16_CONVS = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256), (512, 256)] + [(512, 512)] * 5
VGG16_SHAPES = [(o, i, 3, 3) for o, i in _VGG16_CONVS] + [(4096, 25088), (4096, 4096), (1000, 4096)]

_CHILD = r"""
import json, resource, sys
from deepcompress.errors import FormatError
from deepcompress.format import load_compressed
cap, cases = int(sys.argv[1]), json.loads(sys.argv[2])
with open("/proc/self/statm") as f:
    held = int(f.read().split()[0]) * resource.getpagesize()
_, hard = resource.getrlimit(resource.RLIMIT_AS)
limit = held + cap if hard == resource.RLIM_INFINITY else min(held + cap, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for path, max_elements in cases:
    try:
        load_compressed(path, max_elements=max_elements)
        out = {"outcome": "loaded"}
    except FormatError as exc:
        out = {"outcome": "FormatError", "section": exc.section, "offset": exc.offset, "message": str(exc)}
    print(json.dumps(out), flush=True)
"""


def read_capped(cases: list[tuple[Path, int | None]]) -> list[dict[str, Any]]:
    """``load_compressed`` of each (path, max_elements) in one child process limited to ``CAP_BYTES``
    more address space; the outcome of each (a MemoryError or a kill fails the assertion here)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("RLIMIT_AS and /proc/self/statm are Linux-specific")
    env = {**os.environ, "PYTHONPATH": str(Path(deepcompress.__file__).parents[1])}
    args = [sys.executable, "-c", _CHILD, str(CAP_BYTES), json.dumps([[str(p), m] for p, m in cases])]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"child exited {done.returncode}:\n{done.stderr[-3000:]}"
    return [json.loads(line) for line in done.stdout.splitlines()]


def bomb(numel: int, nnz: int, count: int, index: tuple[str, bytes], codes: tuple[str, bytes] = ("raw", b"")) -> bytes:
    """A one-layer file (codebook [1.0]) of ``numel`` weights, ``nnz`` stored, whose index stream of
    ``count`` symbols is ``index`` = (coder, bytes) and whose codes stream is ``codes``; CRCs right."""
    layer = {
        "name": "bomb", "kind": "linear", "shape": [1, numel], "wbits": 1, "ibits": 1, "nnz": nnz, "k": 1, "cb": "f4",
        "index": {"coder": index[0], "count": count, "bytes": len(index[1])}, "codes": {"coder": codes[0], "bytes": len(codes[1])},
    }
    return assemble({"model": "bomb", "meta": {}, "layers": [layer]}, [np.float32(1).tobytes() + index[1] + codes[1]], version=1)


ONE_SYMBOL = {"raw": b"\x00", "rans": b"\x00\x00\x00"}
"""A stream of any count of one symbol (0): raw of width 0 (1 byte), rANS of precision 0 (3 bytes)."""


def hostile_file(coder: str) -> bytes:
    """2**31 index symbols declared in 1 or 3 bytes, within every limit the reader had before."""
    return bomb(2**31, 0, 2**31, (coder, ONE_SYMBOL[coder]))


def one_code_layer(n: int, fillers: int = 0) -> CompressedLayer:
    """A legitimate but extreme layer: ``n`` weights all kept and all equal, so both streams are one
    repeated symbol (``2n`` symbols in a couple of bytes); ``fillers`` leading gaps add index symbols."""
    return CompressedLayer("fc", "linear", (1, n + fillers), np.array([0.5], np.float32), np.arange(fillers, n + fillers), np.zeros(n, np.int64), None, 1, 1)


def symbols_and_dense(data: bytes) -> tuple[int, int]:
    return spec.declared_elements(parse_layout(data, max_elements=2**62).header["layers"])


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_every_committed_file_fits_the_default_budget(path: Path) -> None:
    data = path.read_bytes()
    symbols, dense = symbols_and_dense(data)
    assert symbols <= MEASURED_MAX_SYMBOLS_PER_BYTE * len(data) <= spec.SYMBOLS_PER_BYTE * len(data) / 5  # 5x margin
    assert dense <= spec.DEFAULT_MAX_ELEMENTS
    parse_layout(data)  # the default budget admits it


def test_committed_files_load_with_the_default_budget() -> None:
    for path in COMMITTED:
        assert len(load_compressed(path).layers) == len(parse_layout(path.read_bytes()).header["layers"])


def test_vgg16_sized_header_fits_the_default_budget() -> None:
    # the VGG-16 scale run (benchmarks/results/scale_vgg16.json): 13,013,380 bytes, 22,944,366 symbols
    file_bytes, symbols = 13_013_380, 22_944_366
    entries = [{"shape": list(s), "nnz": 0, "index": {"count": 0}} for s in VGG16_SHAPES]
    entries[0].update(nnz=symbols // 2, index={"count": symbols - symbols // 2})
    assert spec.declared_elements(entries) == (symbols, 138_344_128)
    spec.check_decode_budget(entries, file_bytes)
    assert symbols / file_bytes < MEASURED_MAX_SYMBOLS_PER_BYTE


@pytest.mark.parametrize("coder", ["raw", "rans"])
def test_hostile_stream_of_2_31_symbols_fails_fast_under_a_memory_cap(coder: str, tmp_path: Path) -> None:
    data = hostile_file(coder)
    path = tmp_path / "bomb.dcz"
    path.write_bytes(data)
    refused, allowed = read_capped([(path, None), (path, 2**31)])
    assert refused == {
        "outcome": "FormatError",
        "section": "header",
        "offset": 16,
        "message": (
            f"decode budget: the layers declare 2147483648 stream symbols, over the 4194304 allowed for a "
            f"{len(data)}-byte file (max(4194304, 64 per byte)); if you trust the file, raise the limit: "
            "load_compressed(path, max_elements=2147483648) (section 'header', byte offset 16)"
        ),
    }
    # the control: with the limit raised the same file gets past the check and asks for 8-16 GiB,
    # which the cap refuses (the decoder guard reports the MemoryError as a FormatError)
    assert allowed["outcome"] == "FormatError" and allowed["section"] == "layer bomb index"
    assert "cannot decode" in allowed["message"] and "Unable to allocate" in allowed["message"]


def test_hostile_symbols_within_the_dense_limit_are_refused_too(tmp_path: Path) -> None:
    # 2**27 weights (under the dense default) all kept, both streams one symbol: 2**28 symbols, ~4 GiB to decode
    n = 2**27
    path = tmp_path / "bomb.dcz"
    path.write_bytes(bomb(n, n, n, ("rans", ONE_SYMBOL["rans"]), ("raw", ONE_SYMBOL["raw"])))
    (refused,) = read_capped([(path, None)])
    assert refused["outcome"] == "FormatError" and refused["section"] == "header"
    assert f"declare {2 * n} stream symbols, over the 4194304 allowed" in refused["message"]


def test_declared_dense_elements_are_bounded_by_max_elements() -> None:
    # nnz 0 and empty streams: nothing to decode, yet dense_weight() would allocate 2**31 floats
    data = bomb(2**31, 0, 0, ("raw", b""))
    with pytest.raises(FormatError) as err:
        from_bytes(data)
    assert str(err.value) == (
        "decode budget: the layers declare 2147483648 dense weight elements, over max_elements=268435456 (the default); "
        "if you trust the file, raise the limit: load_compressed(path, max_elements=2147483648) (section 'header', byte offset 16)"
    )
    cm = from_bytes(data, max_elements=2**31)  # raised: it loads (and allocates nothing per weight)
    assert cm.layers[0].shape == (1, 2**31) and cm.layers[0].nnz == 0


def test_a_legitimate_file_exactly_at_the_floor_loads_and_one_more_symbol_does_not() -> None:
    n = spec.MIN_SYMBOL_BUDGET // 2
    at = to_bytes(CompressedModel("m", [one_code_layer(n)]))
    over = to_bytes(CompressedModel("m", [one_code_layer(n, fillers=1)]))
    assert symbols_and_dense(at)[0] == spec.MIN_SYMBOL_BUDGET and symbols_and_dense(over)[0] == spec.MIN_SYMBOL_BUDGET + 1
    assert spec.SYMBOLS_PER_BYTE * len(over) < spec.MIN_SYMBOL_BUDGET  # a few hundred bytes: the floor applies
    assert np.array_equal(from_bytes(at).layers[0].positions, np.arange(n))
    with pytest.raises(FormatError, match=rf"declare {spec.MIN_SYMBOL_BUDGET + 1} stream symbols, over the {spec.MIN_SYMBOL_BUDGET} allowed") as err:
        from_bytes(over)
    assert (err.value.section, err.value.offset) == ("header", 16)
    assert f"max_elements={spec.MIN_SYMBOL_BUDGET + 1})" in str(err.value)
    assert np.array_equal(from_bytes(over, max_elements=spec.MIN_SYMBOL_BUDGET + 1).layers[0].positions, np.arange(1, n + 1))


def test_the_budget_grows_with_the_file_at_the_documented_rate() -> None:
    file_bytes = 2 * spec.MIN_SYMBOL_BUDGET // spec.SYMBOLS_PER_BYTE  # past the floor
    allowed = spec.SYMBOLS_PER_BYTE * file_bytes
    assert spec.symbol_budget(file_bytes) == allowed > spec.MIN_SYMBOL_BUDGET
    entry = {"shape": [1, allowed], "nnz": allowed // 2, "index": {"count": allowed - allowed // 2}}
    spec.check_decode_budget([entry], file_bytes)  # exactly at the bound
    entry["index"]["count"] += 1
    with pytest.raises(FormatError, match=rf"over the {allowed} allowed for a {file_bytes}-byte file \(max\(4194304, 64 per byte\)\)"):
        spec.check_decode_budget([entry], file_bytes)
    spec.check_decode_budget([entry], file_bytes, max_elements=allowed + 1)


def test_max_elements_lowers_the_dense_limit_and_is_validated() -> None:
    golden = (ROOT / "tests" / "golden" / "tiny.dcz").read_bytes()  # 4 + 8 dense weights
    from_bytes(golden, max_elements=12)
    with pytest.raises(FormatError, match=r"declare 12 dense weight elements, over max_elements=11; .*max_elements=12\)"):
        from_bytes(golden, max_elements=11)
    for bad, kind in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("9", TypeError)):
        with pytest.raises(kind, match="expected max_elements"):
            from_bytes(golden, max_elements=bad)  # type: ignore[arg-type]


def test_the_check_runs_on_the_header_before_any_section_is_read() -> None:
    # the streams' bytes are garbage and the layer's CRC is wrong: the budget error still comes first
    data = bytearray(hostile_file("rans"))
    data[-5] ^= 0xFF
    with pytest.raises(FormatError, match="decode budget") as err:
        parse_layout(bytes(data))
    assert err.value.section == "header"


def test_load_compressed_threads_max_elements(tmp_path: Path) -> None:
    path = tmp_path / "m.dcz"
    path.write_bytes(to_bytes(CompressedModel("m", [one_code_layer(spec.MIN_SYMBOL_BUDGET // 2, fillers=1)])))
    with pytest.raises(FormatError, match="decode budget"):
        load_compressed(path)
    assert load_compressed(path, max_elements=spec.MIN_SYMBOL_BUDGET + 1).layers[0].nnz == spec.MIN_SYMBOL_BUDGET // 2
