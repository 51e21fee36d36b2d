"""Reproduce the paper's Table 8 fc-layer timings on this machine; write results/fc.json and fc.png.

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/fc.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Passive OpenMP waiting must be chosen before any OpenMP runtime loads: on a shared, oversubscribed
# machine spinning workers starve each other and one parallel launch measured 16 ms instead of 6 us.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepcompress.atomic import atomic_write_text  # noqa: E402
from deepcompress.perf.fc import PAPER_LAYERS, plot_fc, run_fc_benchmark  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="*", default=list(PAPER_LAYERS), choices=list(PAPER_LAYERS))
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="tiny layers, 3 repeats (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    result = run_fc_benchmark(layers=args.layers, repeats=args.repeats, quick=args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "fc.json", json.dumps(result, indent=2) + "\n")
    plot_fc(result, str(args.out / "fc.png"))
    for row in result["results"]:
        print(
            f"{row['layer']:12s} batch {row['batch']:3d}: dense {row['dense_us']:9.1f} us ({row['fastest_dense']}), "
            f"ours {row['ours_us']:8.1f} us, speedup {row['speedup']:5.2f}x (warm {row['speedup_warm']:5.2f}x), "
            f"floor {row['floor_us']:7.1f} us ({row['ours_over_floor']:.1f}x away), "
            f"max rel err {max(row['relative_error'].values()):.1e}"
        )
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
