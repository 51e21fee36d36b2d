"""Entropy coders and whole-file decode speed on VGG-16-sized synthetic streams.

Streams: relative-index symbols of an 8%-dense layer at 5 bits (geometric gaps, fillers included) and
peaked 5- and 8-bit weight codes (a rounded normal), 10M symbols each. For each: empirical entropy,
canonical Huffman and rANS sizes (tables included), zstd level 19 on the raw uint8/uint16 stream, and
decode throughput (median of repeats). Then a VGG-16-shaped CompressedModel with the paper's kept
fractions (~10M nonzeros) is written and read back, timing the whole-file decode.

Run: python benchmarks/coding.py [--symbols N] [--repeats R]   -> benchmarks/results/coding.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import zstandard

from deepcompress.atomic import atomic_write_text
from deepcompress.coding import encode_positions
from deepcompress.coding import huffman, rans
from deepcompress.jit import HAVE_NUMBA
from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.format import from_bytes, to_bytes

# VGG-16 layer shapes and the paper's kept fractions (Table 5); conv 8-bit, fc 5-bit weights, 5-bit index.
VGG16 = [
    ("conv1_1", (64, 3, 3, 3), 0.58), ("conv1_2", (64, 64, 3, 3), 0.22), ("conv2_1", (128, 64, 3, 3), 0.34),
    ("conv2_2", (128, 128, 3, 3), 0.36), ("conv3_1", (256, 128, 3, 3), 0.53), ("conv3_2", (256, 256, 3, 3), 0.24),
    ("conv3_3", (256, 256, 3, 3), 0.42), ("conv4_1", (512, 256, 3, 3), 0.32), ("conv4_2", (512, 512, 3, 3), 0.27),
    ("conv4_3", (512, 512, 3, 3), 0.34), ("conv5_1", (512, 512, 3, 3), 0.35), ("conv5_2", (512, 512, 3, 3), 0.29),
    ("conv5_3", (512, 512, 3, 3), 0.36), ("fc6", (4096, 25088), 0.04), ("fc7", (4096, 4096), 0.04),
    ("fc8", (1000, 4096), 0.23),
]


def random_positions(rng: np.random.Generator, numel: int, keep: float) -> np.ndarray:
    """Sorted positions with geometric gaps (independent Bernoulli(keep) survival), in [0, numel)."""
    pos = np.cumsum(rng.geometric(keep, int(numel * keep * 1.1) + 16)) - 1
    return pos[pos < numel]


def peaked_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    k = 2**bits
    return np.clip(np.round(rng.normal(k / 2, k / 10, n)), 0, k - 1).astype(np.int64)


def entropy_bytes(sym: np.ndarray) -> float:
    p = np.bincount(sym) / sym.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * sym.size / 8)


def timed(fn, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    fn()  # warm-up (and numba compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def bench_stream(name: str, sym: np.ndarray, repeats: int) -> dict[str, object]:
    raw = sym.astype(np.uint8 if sym.max() < 256 else np.uint16).tobytes()
    h, r = huffman.encode(sym), rans.encode(sym)
    assert np.array_equal(huffman.decode(h, sym.size), sym) and np.array_equal(rans.decode(r, sym.size), sym)
    ent = entropy_bytes(sym)
    out: dict[str, object] = {"symbols": int(sym.size), "alphabet": int(sym.max()) + 1, "entropy_bytes": ent}
    for coder, blob, dec in (("huffman", h, huffman.decode), ("rans", r, rans.decode)):
        t = timed(lambda: dec(blob, sym.size), repeats)
        out[coder] = {"bytes": len(blob), "over_entropy_pct": 100 * (len(blob) / ent - 1),
                      "decode": t, "decode_msym_per_s": sym.size / t["median_s"] / 1e6}
    z = zstandard.ZstdCompressor(level=19).compress(raw)
    out["zstd19"] = {"bytes": len(z), "raw_bytes": len(raw), "over_entropy_pct": 100 * (len(z) / ent - 1)}
    print(f"{name}: entropy {ent:.0f} B | huffman {len(h)} | rans {len(r)} | zstd19 {len(z)} | "
          f"decode huffman {out['huffman']['decode_msym_per_s']:.0f} Msym/s, rans {out['rans']['decode_msym_per_s']:.0f} Msym/s")
    return out


def vgg16_model(rng: np.random.Generator) -> CompressedModel:
    layers = []
    for name, shape, keep in VGG16:
        numel = int(np.prod(shape))
        pos = random_positions(rng, numel, keep)
        bits = 8 if len(shape) == 4 else 5
        layers.append(CompressedLayer(name, "conv2d" if len(shape) == 4 else "linear", shape,
                                      rng.normal(size=2**bits).astype(np.float32), pos, peaked_codes(rng, pos.size, bits),
                                      rng.normal(size=shape[0]).astype(np.float32), bits, 5))
    return CompressedModel("vgg16", layers)


def machine() -> dict[str, object]:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    import numba

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__ if HAVE_NUMBA else None, "zstandard": zstandard.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "coding.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.symbols
    index = encode_positions(random_positions(rng, int(n / 0.08 * 1.2), 0.08), 5)[:n]
    if index[-1] == 31:
        index = index[:-1]
    streams = {"index_5bit_8pct": index, "codes_5bit_peaked": peaked_codes(rng, n, 5), "codes_8bit_peaked": peaked_codes(rng, n, 8)}
    results: dict[str, object] = {"machine": machine(), "streams": {k: bench_stream(k, v, args.repeats) for k, v in streams.items()}}

    cm = vgg16_model(rng)
    nnz = sum(l.nnz for l in cm.layers)
    t = time.perf_counter()
    data = to_bytes(cm)
    encode_s = time.perf_counter() - t
    back = from_bytes(data)
    assert all(np.array_equal(a.positions, b.positions) and np.array_equal(a.codes, b.codes) for a, b in zip(cm.layers, back.layers))
    decode = timed(lambda: from_bytes(data), args.repeats)
    symbols = nnz + sum(int(encode_positions(l.positions, l.index_bits).size) for l in cm.layers)
    results["vgg16_file"] = {"nnz": nnz, "symbols": symbols, "file_bytes": len(data), "dense_bytes": cm.dense_bytes,
                             "ratio": cm.dense_bytes / len(data), "encode_s": encode_s, "decode": decode,
                             "decode_msym_per_s": symbols / decode["median_s"] / 1e6}
    print(f"vgg16 file: {nnz} nonzeros, {symbols} symbols, {len(data)} bytes, encode {encode_s:.2f} s, "
          f"decode {decode['median_s']:.3f} s ({results['vgg16_file']['decode_msym_per_s']:.0f} Msym/s)")
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
