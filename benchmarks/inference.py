"""Inference from the compressed form, one run: the paper's Table 8 fc layers at batch 1 and 64, and
whole-network batch-1 latency (LeNet-300-100, LeNet-5, VGG-16's classifier, ResNet-18), dense vs
torch CSR vs ours, cold and warm. Writes results/inference.json and prints its Markdown tables
(``python benchmarks/summarize.py --inference`` prints them again from the JSON).

Where the CPU runs the opt-in int8 format, the fc table's batch-1 rows also time ``ours_int8``
(:mod:`deepcompress.perf.fc`); its own table is printed after the others.

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/inference.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# torch's OpenMP threads must not spin while ours run (chosen before any OpenMP runtime loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepcompress.atomic import atomic_write_text  # noqa: E402
from deepcompress.perf.networks import NETWORKS, run_inference_benchmark  # noqa: E402
from deepcompress.runtime import simd  # noqa: E402
from summarize import inference_section  # noqa: E402  (benchmarks/ is this script's directory)

ROOT = Path(__file__).resolve().parents[1]


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
    result = run_inference_benchmark(ROOT, tuple(args.networks), repeats=args.repeats, quick=args.quick,
                                     threads=args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "inference.json", json.dumps(result, indent=2, default=float) + "\n")
    print("\n".join(inference_section(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
