"""Batch-1 latency and energy of the committed compressed LeNets against their dense references.

Writes benchmarks/results/latency.json: for each model, median (min, max) microseconds per input of the
decoded dense network (same weights as the file, computed with dense layers) and of the sparse runtime
(``deepcompress.load(..., runtime="sparse")``) on a real MNIST test image,
measured interleaved in one process, and the paper's 45 nm energy estimate from memory traffic.
Run: ``python benchmarks/latency.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from deepcompress.perf import energy_estimate, whole_model_latency  # noqa: E402
from deepcompress.perf.machine import machine_info  # noqa: E402
from deepcompress.data import load_split  # noqa: E402
from deepcompress.runtime.dense import to_dense_module  # noqa: E402
from deepcompress.format import load_compressed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    image = load_split("mnist", "test").tensors(1)[0]
    results = {"machine": machine_info(torch.get_num_threads()), "models": {}}
    for name in ("lenet300", "lenet5"):
        compressed = load_compressed(ROOT / "experiments" / "results" / f"{name}_mnist.dcz")
        dense = to_dense_module(compressed)
        latency = whole_model_latency(compressed, dense, image, repeats=501)
        energy = energy_estimate(compressed)
        results["models"][name] = {"latency": latency, "energy": energy}
        print(name, json.dumps({k: v for k, v in latency.items() if not isinstance(v, dict)}), json.dumps({k: v for k, v in energy.items() if not isinstance(v, (dict, list))}))
    out = ROOT / "benchmarks" / "results" / "latency.json"
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
