"""Compress AlexNet and VGG-16 without retraining; write results/scale_<model>.json (paper Tables 4-5).

Run:  python benchmarks/scale.py [--models vgg16 alexnet] [--quick]

Each model runs in a fresh process so its peak resident memory is its own. The pipeline is the
library's own (prune_, quantize_, export_compressed, save, load_compressed, to_dense_module): see
deepcompress.perf.scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from deepcompress.atomic import atomic_write_text


def run_one(model: str, quick: bool, out: Path) -> dict:
    """``run_scale_benchmark(model)`` in a child process (``-m deepcompress bench scale --json``)."""
    cmd = [sys.executable, "-m", "deepcompress.cli", "bench", "scale", "--model", model, "--json"]
    # Passive OpenMP waiting (as benchmarks/fc.py): on this shared 2-core machine spinning workers starve
    # each other; chunked pruning of AlexNet's fc6 took 6.3 s with 2 spinning threads, 0.7 s passive.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    done = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True, check=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    atomic_write_text(out / f"scale_{model}{'_quick' if quick else ''}.json", json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["alexnet", "vgg16"], choices=["alexnet", "vgg16"])
    parser.add_argument("--quick", action="store_true", help="LeNet-5 stand-in (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        r = run_one(model, args.quick, args.out)
        s = r["stages_s"]
        print(
            f"{r['model']}: compress {r['compress_s']:.2f} s (prune {s['prune_s']:.2f}, quantize {s['quantize_s']:.2f}, "
            f"export {s['export_s']:.2f}, encode+write {s['encode_write_s']:.2f}), "
            f"decode {r['decode_s']:.2f} s (read {s['read_s']:.2f}, "
            f"dense {s['decode_dense_s']:.2f}), "
            f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB = {r['peak_rss_over_dense']:.2f}x dense "
            f"(baseline {r['baseline_rss_bytes'] / 2**20:.0f} MiB), "
            f"{r['dense_bytes'] / 1e6:.1f} MB -> {r['file_bytes'] / 1e6:.2f} MB ({r['ratio']:.1f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
