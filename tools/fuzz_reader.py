"""Fuzz the .dcz reader: every input must decode or raise FormatError, nothing else (issue 8.1).

Two engines:

* seeded (default): a deterministic mutator over a few real files -- bit flips, random bytes,
  truncation, appended bytes, splices between files, huge values written over length fields, and
  structured mutations of the header or the payload that are re-checksummed (``writer.assemble``) so
  they get past the CRC-32s and reach the JSON validation and the stream decoders, including decode
  bombs (a layer declaring up to 2**30 weights in 1-3 stream bytes) for the decode budget;
* ``--atheris``: coverage-guided libFuzzer through atheris (``pip install atheris``), seeded with the
  same files and mutations; numba is switched off so the decoders' Python twins (same source) can be
  instrumented.

The seeded engine reports the number of cases, cases per second, the outcome counts and the slowest
case, and exits 1 on any exception other than FormatError (printing the seed and mutation kind to
reproduce it); libFuzzer reports its own runs and exec/s and stops at the first such exception.

Run: python tools/fuzz_reader.py [--cases 100000] [--seed 0] [--atheris]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
import zlib
from typing import Any, Callable

import numpy as np

if __name__ == "__main__" and "--atheris" in sys.argv:
    import atheris  # optional: pip install atheris

    os.environ["DEEPCOMPRESS_NO_NUMBA"] = "1"  # numba cannot compile instrumented bytecode; fuzz the Python twins

    _instrumented = atheris.instrument_imports(include=["deepcompress"])  # coverage of our code only
else:
    _instrumented = contextlib.nullcontext()
with _instrumented:
    from deepcompress.compressed import CompressedLayer, CompressedModel
    from deepcompress.errors import FormatError
    from deepcompress.format import from_bytes, inspect_bytes, spec, to_bytes
    from deepcompress.format.reader import parse_layout
    from deepcompress.format.writer import assemble

EDGE_VALUES = [0, 1, 2, 3, 255, 256, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, -1, 10**30]


def seed_files() -> list[bytes]:
    """Real files covering every coder, float16 codebooks and biases, attrs, extras, an empty layer."""
    rng = np.random.default_rng(0)
    layers = []
    for name, shape, keep, bits in (("fc1", (30, 40), 0.1, 3), ("conv", (4, 2, 3, 3), 0.5, 2), ("fc3", (5, 8), 0.0, 1)):
        numel = int(np.prod(shape))
        pos = np.sort(rng.choice(numel, int(numel * keep), replace=False))
        codes = np.clip(rng.normal(3, 1.5, pos.size).round(), 0, 7).astype(np.int64)
        codebook = rng.normal(size=8).astype(np.float16).astype(np.float32) if name == "conv" else rng.normal(size=8)
        bias = rng.normal(size=shape[0]).astype(np.float16).astype(np.float32)
        kind = "conv2d" if len(shape) == 4 else "linear"
        attrs = {"stride": [1, 1]} if kind == "conv2d" else {}
        layers.append(CompressedLayer(name, kind, shape, codebook, pos, codes, bias, 3, bits, attrs, bias_dtype="float16" if name == "fc1" else "float32"))
    cm = CompressedModel("fuzz", layers, {"s": np.arange(3, dtype=np.float32)}, {"dataset": "mnist"})
    return [to_bytes(cm, coder) for coder in ("auto", "raw", "huffman", "rans")]


def _units(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The header object and the CRC-less unit bytes of a valid file."""
    layout = parse_layout(data)
    units, start = [], layout.header_bytes
    for name, sec in layout.sections.items():
        if name.endswith(" " + spec.CRC_PART):
            units.append(data[start : sec.offset])
            start = sec.offset + sec.length
    return layout.header, units


def _walk(obj: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every scalar in a JSON object."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _walk(v, path + (k,))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _walk(v, path + (i,))] or [path]
    return [path]


def _mutate_header(rng: np.random.Generator, header: dict[str, Any]) -> None:
    paths = _walk(header)
    path = paths[rng.integers(len(paths))]
    target = header
    for key in path[:-1]:
        target = target[key]
    choice = rng.integers(4)
    if choice == 0:
        target[path[-1]] = EDGE_VALUES[rng.integers(len(EDGE_VALUES))]
    elif choice == 1:
        target[path[-1]] = [None, "x", 1.5, [], {}, True, "huffman", "raw", "rans", "f2"][rng.integers(10)]
    elif choice == 2 and isinstance(target, dict):
        target.pop(path[-1])
    else:
        target[path[-1]] = {"a": [1] * int(rng.integers(1, 50))}


def _declare_huge(rng: np.random.Generator, header: dict[str, Any], units: list[bytes]) -> None:
    """Make one layer declare up to 2**30 weights with 1-3 byte streams of one repeated symbol (all
    kept and one code, or none kept): a decode bomb within the format's limits, which the decode
    budget must refuse from the header (the smallest sizes still decode)."""
    j = int(rng.integers(len(header["layers"])))
    layer = header["layers"][j]
    n = int([2**10, spec.MIN_SYMBOL_BUDGET // 2, 2**27, 2**30][rng.integers(4)])
    kept = bool(rng.integers(2))
    codebook = units[j][: layer["k"] * np.dtype(spec.FLOAT_DTYPES[layer["cb"]]).itemsize]
    layer.pop("bias", None)
    layer.update(shape=[1] * (len(layer["shape"]) - 1) + [n], nnz=n if kept else 0)
    layer["index"] = {"coder": "rans", "count": n if kept else 0, "bytes": 3 if kept else 0}
    layer["codes"] = {"coder": "raw", "bytes": 1 if kept else 0}
    units[j] = codebook + (b"\x00\x00\x00\x00" if kept else b"")  # rANS of symbol 0 (gaps 0), raw width 0 (code 0)


def mutate(rng: np.random.Generator, files: list[bytes], parsed: list[tuple[dict[str, Any], list[bytes]]]) -> tuple[str, bytes]:
    """One mutated input and the name of the mutation kind."""
    i = int(rng.integers(len(files)))
    data = bytearray(files[i])
    kind = ["flip", "bytes", "truncate", "extend", "splice", "length", "header", "payload", "declare"][rng.integers(9)]
    if kind == "flip":
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
    elif kind == "bytes":
        for _ in range(rng.integers(1, 9)):
            data[rng.integers(len(data))] = rng.integers(256)
    elif kind == "truncate":
        del data[rng.integers(len(data)) :]
    elif kind == "extend":
        data += rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
    elif kind == "splice":
        other = files[rng.integers(len(files))]
        a, b = sorted(rng.integers(0, len(data), 2))
        c = int(rng.integers(len(other)))
        data[a:b] = other[c : c + int(rng.integers(0, 2 * (b - a) + 2))]
    elif kind == "length":  # a huge or off-by-some value over a u32 (the header length, or anywhere)
        at = 8 if rng.random() < 0.5 else int(rng.integers(0, len(data) - 3))
        value = [2**32 - 1, 2**31, len(data), len(data) - 15, spec.MAX_HEADER_BYTES + 1][rng.integers(5)]
        data[at : at + 4] = value.to_bytes(4, "little")
    else:
        header, units = json.loads(json.dumps(parsed[i][0])), list(parsed[i][1])
        if kind == "header":
            for _ in range(rng.integers(1, 3)):
                _mutate_header(rng, header)
        elif kind == "declare":
            _declare_huge(rng, header, units)
        else:
            j = int(rng.integers(len(units)))
            unit = bytearray(units[j])
            for _ in range(rng.integers(1, 4)):
                if unit:
                    unit[rng.integers(len(unit))] ^= 1 << int(rng.integers(8))
            units[j] = bytes(unit)
        try:
            return kind, assemble(header, units)
        except (ValueError, TypeError):  # e.g. a value json cannot write: fall back to the original
            return kind, bytes(files[i])
    return kind, bytes(data)


def check(data: bytes) -> str:
    """``"ok"`` or ``"error"`` (FormatError); any other exception propagates."""
    try:
        from_bytes(data)
        inspect_bytes(data)
        return "ok"
    except FormatError:
        return "error"


def run_seeded(cases: int, seed: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``cases`` seeded mutations; return counts, rate and any failure (a non-FormatError)."""
    files = seed_files()
    parsed = [_units(f) for f in files]
    rng = np.random.default_rng(seed)
    outcomes = {"ok": 0, "error": 0}
    slowest = (0.0, "")
    start = time.perf_counter()
    for case in range(cases):
        kind, data = mutate(rng, files, parsed)
        t0 = time.perf_counter()
        try:
            outcomes[check(data)] += 1
        except Exception:  # noqa: BLE001 -- exactly what the fuzzer exists to find
            return {"cases": case + 1, "failure": f"case {case} ({kind}, seed {seed}, crc {zlib.crc32(data):08x}):\n{traceback.format_exc()}"}
        slowest = max(slowest, (time.perf_counter() - t0, kind))
        if log and (case + 1) % 20000 == 0:
            log(f"{case + 1} cases, {(case + 1) / (time.perf_counter() - start):.0f}/s")
    elapsed = time.perf_counter() - start
    return {"cases": cases, "seconds": elapsed, "cases_per_s": cases / elapsed, **outcomes, "slowest_s": slowest[0], "slowest_kind": slowest[1], "failure": None}


def run_atheris(cases: int) -> None:
    import atheris

    files = seed_files()
    parsed = [_units(f) for f in files]

    def one_input(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        rng = np.random.default_rng(provider.ConsumeUInt(4))
        if provider.ConsumeBool():  # structured: a mutation of a real file
            check(mutate(rng, files, parsed)[1])
        else:  # raw libFuzzer bytes, with a valid preamble half of the time
            prefix = files[0][:16] if provider.ConsumeBool() else b""
            check(prefix + provider.ConsumeBytes(provider.remaining_bytes()))

    crashes = tempfile.mkdtemp(prefix="dcz-fuzz-")
    atheris.Setup([sys.argv[0], f"-runs={cases}", "-max_len=4096", f"-artifact_prefix={crashes}/"], one_input)
    atheris.Fuzz()  # exits the process; libFuzzer prints runs, exec/s and any crash (input saved in `crashes`)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atheris", action="store_true", help="coverage-guided fuzzing (needs atheris)")
    args = parser.parse_args()
    if args.atheris:
        run_atheris(args.cases)
        return 0
    result = run_seeded(args.cases, args.seed)
    if result["failure"]:
        print(f"FAILURE after {result['cases']} cases: {result['failure']}")
        return 1
    print(
        f"{result['cases']} cases in {result['seconds']:.1f} s ({result['cases_per_s']:.0f} cases/s): "
        f"{result['ok']} decoded, {result['error']} FormatError, no other exception; "
        f"slowest case {1000 * result['slowest_s']:.1f} ms ({result['slowest_kind']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
