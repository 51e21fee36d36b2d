"""Inference from the compressed form, one run: the paper's Table 8 fc layers at batch 1 and 64, and
whole-network batch-1 latency (LeNet-300-100, LeNet-5, VGG-16's classifier, ResNet-18), dense vs
torch CSR vs ours, cold and warm. Writes results/inference.json and prints its Markdown tables
(``python benchmarks/summarize.py --inference`` prints them again from the JSON).

The fc table gets one more kernel at batch 1, ``ours_int8``: the opt-in int8 format
(``SparseCodebookLinear(format="int8")``, lossy), timed cold and warm in the same interleaved loop as
the others and against the same dense baseline; its own table (and its relative error, excluded from
the fp32 kernels' ``max_relative_error``) is printed after the others and kept under each row's ``int8``.

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/inference.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

# torch's OpenMP threads must not spin while ours run (chosen before any OpenMP runtime loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from deepcompress.atomic import atomic_write_text  # noqa: E402
from deepcompress.perf import fc  # noqa: E402
from deepcompress.perf.networks import NETWORKS, run_inference_benchmark  # noqa: E402
from deepcompress.runtime import SparseCodebookLinear, simd  # noqa: E402
from summarize import inference_section  # noqa: E402  (benchmarks/ is this script's directory)

ROOT = Path(__file__).resolve().parents[1]
INT8 = "ours_int8"


@contextmanager
def int8_kernel() -> Iterator[None]:
    """While open, :mod:`deepcompress.perf.fc` times :data:`INT8` beside its kernels at batch 1.

    The fc benchmark builds each layer's timed calls in ``fc._kernels``; wrapping it puts the int8
    layer into the same interleaved cold and warm loops and the same correctness check as the dense
    baseline, without a second copy of that loop here.
    """
    original = fc._kernels

    def with_int8(layer, batch):  # type: ignore[no-untyped-def]
        calls, nbytes, state = original(layer, batch)
        if batch == 1:
            module = SparseCodebookLinear.from_compressed(layer, backend="simd", format="int8")
            calls[INT8] = lambda: module(state["x_t"])
            nbytes[INT8] = module._layout.nbytes  # type: ignore[union-attr]
        return calls, nbytes, state

    fc._kernels = with_int8
    try:
        yield
    finally:
        fc._kernels = original


def summarize_int8(result: dict) -> None:
    """Add each batch-1 row's int8 figures under ``row["int8"]`` and keep the fp32 kernels'
    ``max_relative_error`` free of the (larger, expected) int8 error."""
    rows = [r for r in result["fc"]["results"] if INT8 in r["cold_us"]]
    if not rows:
        return
    bandwidth = result["read_bandwidth_gbs"]
    for r in rows:
        cold, warm = r["cold_us"][INT8]["median"], r["warm_us"][INT8]["median"]
        r["int8"] = {
            "us": cold,
            "speedup": r["dense_us"] / cold,
            "speedup_warm": min(r["warm_us"][k]["median"] for k in fc.DENSE_KERNELS) / warm,
            "speedup_over_ours": r["ours_us"] / cold,
            "relative_error": r["relative_error"][INT8],
            "bandwidth_fraction": r["achieved_gbs"][INT8] / bandwidth,
        }
    summary = result["fc"]["summary"]
    summary["max_relative_error"] = max(e for r in result["fc"]["results"]
                                        for k, e in r["relative_error"].items() if k != INT8)
    summary["int8_max_relative_error"] = max(r["int8"]["relative_error"] for r in rows)
    summary["batch1_int8_geomean_speedup"] = float(np.exp(np.mean([np.log(r["int8"]["speedup"]) for r in rows])))


def int8_section(result: dict) -> list[str]:
    """The int8 column as a Markdown table (empty when it was not measured)."""
    rows = [r for r in result["fc"]["results"] if "int8" in r]
    if not rows:
        return []
    lines = [
        "",
        "Opt-in int8 (`format=\"int8\"`, lossy) at batch 1, same run and dense baseline; cold-cache medians,",
        "microseconds per input; relative error against the float64 dense product:",
        "",
        "| layer | dense | ours (format) | int8 | int8 speedup | warm | int8 / ours | rel. error | bandwidth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["int8"]
        lines.append(
            f"| {r['layer']} | {r['dense_us']:.0f} | {r['ours_us']:.0f} ({r['format']}) | {q['us']:.0f} | "
            f"{q['speedup']:.2f}x | {q['speedup_warm']:.2f}x | {q['speedup_over_ours']:.2f}x | "
            f"{q['relative_error']:.1e} | {100 * q['bandwidth_fraction']:.0f}% |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny layers, 3 repeats (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    missing = simd.int8_missing()
    if missing is not None:
        print(f"no int8 column: the int8 kernel needs {missing}", file=sys.stderr)
    with int8_kernel() if missing is None else nullcontext():
        result = run_inference_benchmark(ROOT, tuple(args.networks), repeats=args.repeats, quick=args.quick,
                                         threads=args.threads)
    summarize_int8(result)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "inference.json", json.dumps(result, indent=2, default=float) + "\n")
    print("\n".join(inference_section(result) + int8_section(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
